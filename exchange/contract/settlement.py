"""Settlement's answers over the signed API: batches as the operator sees them, a participant's
statement summaries and its webhook address.

Field names and JSON shapes are what partners already read: ids and dates are strings (UUIDs,
``YYYY-MM-DD``, RFC 3339 in UTC with ``Z``), amounts integers (micros, or minor units where the
name says ``_minor``)."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec


class SettlementObligationOut(msgspec.Struct):
    """One cell of the day's gross matrix: what ``debtor_id`` owes ``creditor_id``."""

    debtor_id: uuid.UUID
    creditor_id: uuid.UUID
    amount_micros: int


class SettlementPositionOut(msgspec.Struct):
    """A participant's day: gross owed and owing, its net, the carries and the payout."""

    partner_id: uuid.UUID
    gross_owed_micros: int
    gross_owing_micros: int
    net_micros: int
    """Positive: the participant receives."""
    carry_in_micros: int
    payout_minor: int
    """In minor units of the currency (cents); positive: the participant is paid."""
    carry_out_micros: int
    """What is left below one minor unit, carried to the next day."""


class SettlementInstructionOut(msgspec.Struct):
    """A payment to make: ``payer_id`` pays ``payee_id``."""

    seq: int
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    amount_minor: int


class SettlementBatchOut(msgspec.Struct):
    """A business day's batch with everything it concluded."""

    id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    status: str
    """``complete`` (payments due) or ``paid``."""
    currency: str
    minor_exponent: int
    postings: int
    """How many money postings the batch took, ``settle`` payouts not counted."""
    created_at: dt.datetime
    completed_at: dt.datetime | None
    paid_at: dt.datetime | None
    settle_transaction_id: uuid.UUID | None
    """The ``settle`` transaction that booked the payouts, once the batch is paid."""
    obligations: list[SettlementObligationOut]
    positions: list[SettlementPositionOut]
    instructions: list[SettlementInstructionOut]


class SettlementBatchSummaryOut(msgspec.Struct):
    """A batch in the list of batches, without its matrix, positions and instructions."""

    id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    status: str
    postings: int
    completed_at: dt.datetime | None
    paid_at: dt.datetime | None


class StatementSummaryOut(msgspec.Struct):
    """One of a participant's statements."""

    business_date: dt.date
    batch_id: int
    status: str
    """``complete`` (payments due) or ``paid``."""
    net_micros: int
    payout_minor: int
    sha256: str
    """Of the canonical statement document."""


class WebhookOut(msgspec.Struct):
    url: str | None
    """Where events are POSTed; null when none is registered."""


class WebhookDeliveryOut(msgspec.Struct):
    """One event for the caller's webhook and how its delivery stands."""

    event_id: uuid.UUID
    event_type: str
    created_at: dt.datetime
    state: str
    """``pending`` (being tried), ``delivered`` (acknowledged with a 2xx) or ``dead`` (gave up
    after ``EXCHANGE_WEBHOOK_MAX_ATTEMPTS`` attempts; replay it once the receiver is fixed)."""
    attempts: int
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    dead_at: dt.datetime | None
    last_error: str | None
    """Why the last attempt failed: an HTTP status, a network error, a refused address."""
