"""Tables of points' age: expiry policies, lots and what each debit took from which lot.

See ``exchange.ledger.lots`` for the design note (what opens a lot, the consumption order,
holds, expiry).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow, uuid7

EXPIRY_KINDS = ("never", "months", "quarters", "activity")


class ExpiryPolicy(Base):
    """How long a brand's points live, from ``effective_at`` on. Effective-dated and immutable
    like point values: a new row supersedes, none is updated or deleted (a trigger refuses it),
    and the version in force at ``T`` is the one with the greatest ``effective_at <= T``.

    ``never``: points do not expire. ``months``: a lot expires ``period`` calendar months after
    it was opened. ``quarters``: at the end of the ``period``-th calendar quarter (UTC), the
    quarter it was opened in counting as the first. ``activity``: ``period`` months after the
    member's last earn; every earn extends every open lot of the member."""

    __tablename__ = "expiry_policy"
    __table_args__ = (
        UniqueConstraint("partner_id", "effective_at"),
        CheckConstraint("kind IN ('never', 'months', 'quarters', 'activity')", name="kind"),
        CheckConstraint(
            "(kind = 'never' AND period IS NULL)"
            " OR (kind <> 'never' AND period BETWEEN 1 AND 1200)",
            name="period",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    kind: Mapped[str] = mapped_column(String(16))
    period: Mapped[int | None] = mapped_column(Integer)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lot(Base):
    """Points credited to a member account by one transaction, with their expiry. ``remaining``
    falls as debits consume the lot (oldest expiry first) and never rises; an open lot is one
    with ``remaining > 0``. The open lots of a member account sum to its balance."""

    __tablename__ = "lot"
    __table_args__ = (
        CheckConstraint("points > 0", name="points"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining"),
        # The consumption order, open lots only: a debit reads the first few of its account.
        Index(
            "ix_lot_open",
            "account_id",
            "expires_at",
            "id",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
        # What falls due: the expiry run and the notices read open lots by expiry.
        Index(
            "ix_lot_due",
            "expires_at",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    # No foreign keys (a lookup per row): the engine takes both from what it has just locked
    # and posted, in the same transaction.
    account_id: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The credit that opened it."""
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """:data:`exchange.ledger.policies.NEVER` for points that do not expire."""
    noticed: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether the brand was sent ``points.expiring`` for it."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LotConsumption(Base):
    """What one debit took from one lot."""

    __tablename__ = "lot_consumption"
    __table_args__ = (
        PrimaryKeyConstraint("transaction_id", "lot_id"),
        CheckConstraint("points > 0", name="points"),
        Index("ix_lot_consumption_lot_id", "lot_id"),
    )

    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    lot_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    account_id: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
