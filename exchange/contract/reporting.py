"""The operator's reports: the coalition at a glance and each brand's programme metrics.

Integers only. Points are a brand's points; money is in micros (10^-6) of the settlement
currency, exact (a point value is whole micros per point, so points times value needs no
rounding); a ratio is in basis points (1/10 000), rounded down, with its numerator and
denominator beside it so that nothing is lost. Dates are business dates (``YYYY-MM-DD``) of the
settlement calendar. The definitions are in the README ("Programme metrics")."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from exchange.contract.schemas import PointValueOut, RateOut


class BrandOutstanding(msgspec.Struct):
    """A brand's points outstanding: the sum of its members' balances (minus its issuance
    accounts' sum), and what they are worth at the point value in force."""

    brand_id: uuid.UUID
    name: str
    currency: str
    points: int
    micros_per_point: int
    """The point value in force when the report was made; 0 when the brand has none."""
    value_micros: int
    """``points * micros_per_point``, exact."""


class DailyVolume(msgspec.Struct):
    """A brand's member movements of one business day, in its points, by what moved them."""

    business_date: dt.date
    brand_id: uuid.UUID
    issued: int
    """Credited by ``issue``."""
    redeemed: int
    """Debited by ``redeem`` and ``capture``."""
    converted_out: int
    """Debited by ``convert`` (the points members of this brand converted away)."""
    converted_in: int
    """Credited by ``convert`` (the points this brand's members received)."""
    donated: int
    """Debited by ``donate``."""
    expired: int
    """Debited by ``expire``."""
    reversed_in: int
    """Credited by ``reverse``."""
    reversed_out: int
    """Debited by ``reverse``."""
    transferred: int
    """Moved between two members of the brand by ``transfer`` (counted once)."""


class ConversionFlow(msgspec.Struct):
    """Conversions from one brand to another over the report's days."""

    from_brand_id: uuid.UUID
    from_currency: str
    to_brand_id: uuid.UUID
    to_currency: str
    points_out: int
    """Source points the members gave (fee included)."""
    points_in: int
    """Destination points the members received."""
    conversions: int


class CharityDonations(msgspec.Struct):
    """Donations to one charity from one brand's members over the report's days."""

    charity_id: uuid.UUID
    charity_name: str
    brand_id: uuid.UUID
    currency: str
    points: int
    value_micros: int
    """What the brand owes the charity for them (each donation at the value in force then)."""
    donations: int


class Overview(msgspec.Struct):
    """The coalition at a glance: outstanding now, and ``first_date`` .. ``last_date``."""

    first_date: dt.date
    last_date: dt.date
    settlement_currency: str | None
    """The money ledger's currency (``None`` before any settlement account exists)."""
    outstanding: list[BrandOutstanding]
    daily: list[DailyVolume]
    """One row per brand and business date with any movement, by date then brand."""
    flows: list[ConversionFlow]
    donations: list[CharityDonations]


class Ratio(msgspec.Struct):
    """``numerator / denominator`` in basis points, rounded down; 0 when the denominator is."""

    numerator: int
    denominator: int
    basis_points: int


class Cohort(msgspec.Struct):
    """Members whose first earn fell in one calendar month (of business dates)."""

    month: dt.date
    """The first day of the month."""
    members: int
    retained: int
    """Of them, active in the 30 business days ending at the report's ``end``."""
    retention: Ratio
    points_earned_per_member: int
    """Issued to the cohort up to ``end`` over its size, rounded down."""
    value_per_member_micros: int
    """Issued points times the point value in force at the report, over its size, rounded down."""


class ProgrammeMetrics(msgspec.Struct):
    """One brand's programme over business dates ``start`` .. ``end`` (both included)."""

    brand_id: uuid.UUID
    currency: str
    start: dt.date
    end: dt.date
    active_30_days: int
    active_90_days: int
    active_in_period: int
    earned: int
    burned: int
    redemption_rate: Ratio
    breakage: int
    repeat_earn_rate: Ratio
    average_points_per_active_member: int
    cohorts: list[Cohort]


class DailyPosition(msgspec.Struct):
    """A participant's settled net position of one business day."""

    business_date: dt.date
    partner_id: uuid.UUID
    name: str
    net_micros: int
    payout_minor: int
    carry_out_micros: int
    status: str
    """The batch's: ``complete`` or ``paid``."""


class WebhookDelivery(msgspec.Struct):
    """An event for a partner's webhook with its state and last error."""

    event_id: uuid.UUID
    partner_id: uuid.UUID
    partner_name: str
    event_type: str
    state: str
    """``pending``, ``delivered`` or ``dead``."""
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    dead_at: dt.datetime | None
    last_error: str | None


class ChainHeads(msgspec.Struct):
    """How far the ledger has gone: accounts, their heads, the newest transaction."""

    accounts: int
    postings: int
    """The sum of every account's ``seq``: postings written."""
    transactions: int
    latest_transaction_at: dt.datetime | None


class LedgerHealth(msgspec.Struct):
    heads: ChainHeads
    log_size: int
    """Transactions in the Merkle log."""
    checkpoint_size: int | None
    checkpoint_root_hash: str | None
    """Hex, of the latest signed checkpoint (``None`` before the first)."""
    checkpoint_witnesses: int
    reporting_closed_through: dt.date | None
    """The latest business date the daily rollup holds."""


class RateHistory(msgspec.Struct):
    """Every point value and rate version ever set, in force or not, oldest first per brand
    or pair (a version is in force from its ``effective_at`` until the next one's)."""

    point_values: list[PointValueOut]
    rates: list[RateOut]
