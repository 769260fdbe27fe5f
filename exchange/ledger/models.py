"""Tables of the ledger: members, accounts, transactions, postings and holds.

See ``exchange.ledger.engine`` for the design note (accounts, signs, invariants).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, BigIntPK, UTCDateTime, utcnow, uuid7

TRANSACTION_KINDS = (
    "issue", "redeem", "transfer", "convert", "donate",
    "hold", "capture", "void", "reverse", "settle", "earn", "expire",
)  # fmt: skip
ACCOUNT_KINDS = ("member", "issuance", "settlement", "breakage")
HOLD_STATUSES = ("active", "captured", "voided", "expired")


class Member(Base):
    __tablename__ = "member"
    __table_args__ = (UniqueConstraint("partner_id", "member_ref"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    member_ref: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Account(Base):
    """One account on one ledger. ``ledger`` is a brand's points currency or the settlement
    currency. ``balance``, ``seq`` and ``head_hash`` are the head of the account's chain of
    postings and change only in the posting engine, under a row lock."""

    __tablename__ = "account"
    __table_args__ = (
        CheckConstraint("kind IN ('member', 'issuance', 'settlement', 'breakage')", name="kind"),
        CheckConstraint("(kind = 'member') = (member_id IS NOT NULL)", name="member_owner"),
        CheckConstraint("kind <> 'member' OR balance - held >= 0", name="member_available"),
        CheckConstraint("held >= 0", name="held"),
        CheckConstraint("seq >= 0", name="seq"),
        Index("uq_account_member_id", "member_id", unique=True),
        Index(
            "uq_account_pool",
            "partner_id",
            "kind",
            "ledger",
            "shard",
            unique=True,
            postgresql_where=text("member_id IS NULL"),
            sqlite_where=text("member_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    ledger: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    member_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("member.id"))
    shard: Mapped[int] = mapped_column(SmallInteger, default=0)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerTransaction(Base):
    """One atomic set of postings. ``points`` is the principal a reversal is capped by."""

    __tablename__ = "ledger_transaction"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('issue', 'redeem', 'transfer', 'convert', 'donate',"
            " 'hold', 'capture', 'void', 'reverse', 'settle', 'earn', 'expire')",
            name="kind",
        ),
        CheckConstraint("points >= 0", name="points"),
        # Only reversals are looked up by it (migration 0008).
        Index(
            "ix_ledger_transaction_reverses_id",
            "reverses_id",
            postgresql_where=text("reverses_id IS NOT NULL"),
            sqlite_where=text("reverses_id IS NOT NULL"),
        ),
        # A batch item's key names one transaction of its partner, for good: the database
        # refuses a second. Single POSTs keep their Idempotency-Key here too, but theirs is the
        # request's, which may be used again once its 24 h record has lapsed.
        Index(
            "uq_ledger_transaction_batch_item_key",
            "partner_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("batch_id IS NOT NULL"),
            sqlite_where=text("batch_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    kind: Mapped[str] = mapped_column(String(16))
    # On PostgreSQL a statement-level trigger checks the partner and the reversed transaction,
    # once per INSERT, in place of these two foreign keys' check per row (migration 0009).
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    reference: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The ``POST /v1/batches`` request this transaction is an item of (``idempotency_key`` is
    then the item's own key)."""
    rate_version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reverses_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("ledger_transaction.id"))
    hold_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    details: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Posting(Base):
    """One line of a transaction on one account. Never updated, never deleted."""

    __tablename__ = "posting"
    __table_args__ = (
        UniqueConstraint("account_id", "seq"),
        CheckConstraint("amount <> 0", name="amount"),
        CheckConstraint("seq >= 1", name="seq"),
        Index("ix_posting_transaction_id", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # On PostgreSQL the posting statement trigger checks that the transaction exists, once per
    # INSERT (migration 0006), instead of this foreign key's check per row.
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ledger_transaction.id"))
    # On PostgreSQL the same trigger checks the accounts too (migration 0009).
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("account.id"))
    ledger: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # No foreign key: it would cost a lookup per posting, and the engine takes the value from
    # the accounts it has locked. 0 means several counterparties (see the engine's design note).
    counterparty_account_id: Mapped[int | None] = mapped_column(BigInteger)
    """The account this posting pairs with for settlement, in its hash (encoding version 2);
    ``NULL`` only on postings written before counterparties were recorded (version 1)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Hold(Base):
    """Points reserved on a member account: they count against ``available`` until captured,
    voided or expired."""

    __tablename__ = "hold"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'captured', 'voided', 'expired')", name="status"),
        CheckConstraint("points > 0", name="points"),
        CheckConstraint("captured >= 0 AND captured <= points", name="captured"),
        Index("ix_hold_account_id_status", "account_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("account.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ledger_transaction.id"))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
