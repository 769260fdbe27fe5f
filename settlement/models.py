"""Tables of settlement: batches, what each took from the ledger, and what it concluded.

A batch is written in one database transaction, whole or not at all, and never changes after,
except once: from ``complete`` to ``paid``. The database holds that (see the migration's
triggers), and ``settlement_entry.posting_id`` being the primary key is what puts a posting in
exactly one batch.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, BigIntPK, UTCDateTime, utcnow, uuid7

BATCH_STATUSES = ("open", "complete", "paid")


class SettlementBatch(Base):
    """One business day's settlement. ``open`` exists only inside the transaction that writes
    the batch; what other sessions see is ``complete`` or ``paid``."""

    __tablename__ = "settlement_batch"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'complete', 'paid')", name="status"),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_at"),
        CheckConstraint("(status = 'open') = (completed_at IS NULL)", name="completed_at"),
        CheckConstraint("minor_exponent BETWEEN 0 AND 6", name="minor_exponent"),
        CheckConstraint("postings >= 0", name="postings"),
        UniqueConstraint("business_date"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    business_date: Mapped[dt.date] = mapped_column(Date)
    cutoff_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="open")
    currency: Mapped[str] = mapped_column(String(16))
    minor_exponent: Mapped[int] = mapped_column(SmallInteger)
    postings: Mapped[int] = mapped_column(BigInteger, default=0)
    """How many money postings the batch took (its ``settlement_entry`` rows)."""
    settle_transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ledger_transaction.id")
    )
    """The ``settle`` transaction that booked the payouts when the batch was marked paid."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SettlementEntry(Base):
    """A money posting taken by a batch. The primary key on ``posting_id`` is the guarantee that
    a posting is settled once. The transaction, account and amount are copied from the posting so
    that a day's arithmetic reads this table alone.

    No foreign keys, on purpose: every row is copied from ``posting`` by the statement that
    inserts it (postings are never deleted); PostgreSQL checks a foreign key with one queued
    trigger event per row, which would make a day's memory grow with its volume, and with a
    ``KEY SHARE`` lock on the row referred to, which would make settlement wait for writers."""

    __tablename__ = "settlement_entry"
    # Rows are only ever appended, a batch at a time, so on PostgreSQL a BRIN index finds a
    # batch's rows at almost no cost per insert (a B-tree costs about as much as the row).
    __table_args__ = (Index("ix_settlement_entry_batch_id", "batch_id", postgresql_using="brin"),)

    posting_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    account_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


class SettlementCursor(Base):
    """Per money account, a sequence number up to which every posting is settled (or is a
    ``settle`` posting) once the batch commits: where the next batch starts looking, so that a
    day's work follows the day's volume and not the ledger's whole history.

    No foreign key to ``account``: checking one takes a ``KEY SHARE`` lock on the account row,
    which waits for, and then holds up, every writer's ``FOR UPDATE`` of it. Settlement never
    locks the ledger (the accounts are read from ``account`` by the statement that writes the
    cursors, and accounts are never deleted)."""

    __tablename__ = "settlement_cursor"
    __table_args__ = (CheckConstraint("through_seq >= 0", name="through_seq"),)

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    through_seq: Mapped[int] = mapped_column(BigInteger)


class SettlementObligation(Base):
    """The gross matrix: ``debtor`` owes ``creditor`` this much for the day."""

    __tablename__ = "settlement_obligation"
    __table_args__ = (
        CheckConstraint("amount_micros > 0", name="amount_micros"),
        CheckConstraint("debtor_partner_id <> creditor_partner_id", name="distinct_partners"),
    )

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    debtor_partner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("partner.id"), primary_key=True
    )
    creditor_partner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("partner.id"), primary_key=True
    )
    amount_micros: Mapped[int] = mapped_column(BigInteger)


class SettlementPosition(Base):
    """A participant's day: ``payout_minor * unit + carry_out == net + carry_in``, to the micro."""

    __tablename__ = "settlement_position"
    __table_args__ = (
        CheckConstraint("gross_owed_micros >= 0 AND gross_owing_micros >= 0", name="gross"),
        CheckConstraint("net_micros = gross_owed_micros - gross_owing_micros", name="net"),
    )

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"), primary_key=True)
    gross_owed_micros: Mapped[int] = mapped_column(BigInteger)
    """What the others owe this participant."""
    gross_owing_micros: Mapped[int] = mapped_column(BigInteger)
    """What this participant owes the others."""
    net_micros: Mapped[int] = mapped_column(BigInteger)
    carry_in_micros: Mapped[int] = mapped_column(BigInteger)
    payout_minor: Mapped[int] = mapped_column(BigInteger)
    """Positive: the participant receives this many minor units; negative: it pays."""
    carry_out_micros: Mapped[int] = mapped_column(BigInteger)


class SettlementInstruction(Base):
    """``payer`` pays ``payee`` ``amount_minor``; ``seq`` is the order they were derived in."""

    __tablename__ = "settlement_instruction"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_minor"),
        CheckConstraint("payer_partner_id <> payee_partner_id", name="distinct_partners"),
        CheckConstraint("seq >= 1", name="seq"),
    )

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    payer_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    payee_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class SettlementStatement(Base):
    """A participant's statement as issued: the canonical JSON document, its SHA-256 and the
    exchange's detached signature over it, fixed when the batch is written."""

    __tablename__ = "settlement_statement"
    __table_args__ = (UniqueConstraint("partner_id", "business_date"),)

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"), primary_key=True)
    business_date: Mapped[dt.date] = mapped_column(Date)
    document: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    """JSON of ``ExchangeKeys.sign_document``: ``key_id``, ``alg``, ``signature`` (base64)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxEvent(Base):
    """An event for a partner's webhook, written in the transaction that caused it and sent by
    ``settlement.webhooks`` until the partner acknowledges it (at least once)."""

    __tablename__ = "outbox_event"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts"),
        Index(
            "ix_outbox_event_due",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
        Index("ix_outbox_event_partner_id", "partner_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    """Canonical JSON of the event's data."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
