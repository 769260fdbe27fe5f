"""Tables of settlement: batches, what each took from the ledger, and what it concluded.

A batch is written in one database transaction, whole or not at all, and never changes after,
except once: from ``complete`` to ``paid``. The database holds that (see the migrations'
triggers), and the constraints of ``settlement_range`` are what put a posting in exactly one
batch.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
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

from exchange.base import Base, BigIntPK, UTCDateTime, utcnow

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
    calendar: Mapped[str | None] = mapped_column(String(80))
    """The zone and cutoff the day was cut with (``"UTC 00:00:00"``), `` early`` appended when
    an operator cut a test day at the moment of the run; ``NULL`` on batches from before."""
    status: Mapped[str] = mapped_column(String(16), default="open")
    currency: Mapped[str] = mapped_column(String(16))
    minor_exponent: Mapped[int] = mapped_column(SmallInteger)
    postings: Mapped[int] = mapped_column(BigInteger, default=0)
    """How many money postings the batch took, ``settle`` payouts not counted."""
    settle_transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ledger_transaction.id")
    )
    """The ``settle`` transaction that booked the payouts when the batch was marked paid."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SettlementRange(Base):
    """What a batch took of one money account: its postings with ``seq`` above ``after_seq``
    (from the first when ``NULL``) up to ``through_seq``.

    The constraints make an account's ranges one chain, so no posting is ever in two batches
    and none is skipped: a range starts where another ended (the foreign key to the same
    table), no two start at the same place or end at the same place (the unique constraints,
    and the partial unique index for the account's first range), and each moves forward (the
    check). Followed from its one start, the chain covers ``1..through`` of its last range
    without a gap or an overlap (a cycle cannot close, as every step goes up).

    No foreign key to ``account``: checking one takes a ``KEY SHARE`` lock on the account row,
    which waits for, and then holds up, every writer's ``FOR UPDATE`` of it. Settlement never
    locks the ledger (accounts are never deleted)."""

    __tablename__ = "settlement_range"
    __table_args__ = (
        CheckConstraint("after_seq IS NULL OR after_seq >= 1", name="after_seq"),
        CheckConstraint("through_seq > COALESCE(after_seq, 0)", name="forward"),
        UniqueConstraint("account_id", "through_seq"),
        UniqueConstraint("account_id", "after_seq"),
        Index(
            "uq_settlement_range_first",
            "account_id",
            unique=True,
            postgresql_where=text("after_seq IS NULL"),
            sqlite_where=text("after_seq IS NULL"),
        ),
        ForeignKeyConstraint(
            ["account_id", "after_seq"],
            ["settlement_range.account_id", "settlement_range.through_seq"],
            name="fk_settlement_range_after_seq_settlement_range",
        ),
    )

    batch_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_batch.id"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    after_seq: Mapped[int | None] = mapped_column(BigInteger)
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
