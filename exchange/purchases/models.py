"""Tables of earn rules and purchases.

Every row here is written once and never changed or deleted (on both databases triggers refuse
it): a rule version is superseded by a newer one, a purchase's points are taken back by return
rows, each with the ``reverse`` transaction that moved them. What a line has returned is the sum
of its return lines.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow, uuid7


class EarnRuleVersion(Base):
    """A brand's earn rules from ``effective_at`` on (until a later version's). ``rules`` is the
    version's body as the brand sent it (``EarnRulesCreate`` without ``effective_at``, JSON)."""

    __tablename__ = "earn_rule_version"
    __table_args__ = (UniqueConstraint("partner_id", "effective_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    rules: Mapped[str] = mapped_column(Text)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Purchase(Base):
    """An order that earned points, once per (brand, order id), with its ``earn`` transaction."""

    __tablename__ = "purchase"
    __table_args__ = (
        UniqueConstraint("partner_id", "order_id"),
        CheckConstraint("points > 0", name="points"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    order_id: Mapped[str] = mapped_column(String(128))
    member_ref: Mapped[str] = mapped_column(String(128))
    currency: Mapped[str] = mapped_column(String(3))
    rule_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("earn_rule_version.id"))
    # No foreign key: a purchase's row is written before its transaction (so that the unique
    # order id queues a second purchase of the order before it locks any account), in the same
    # database transaction.
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PurchaseLine(Base):
    __tablename__ = "purchase_line"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity"),
        CheckConstraint("amount_minor >= 0", name="amount_minor"),
        CheckConstraint("points >= 0", name="points"),
    )

    purchase_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("purchase.id"), primary_key=True
    )
    line: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    product_type: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    product_type_bps: Mapped[int] = mapped_column(Integer)
    category_bps: Mapped[int] = mapped_column(Integer)
    promotion_bps: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)


class PurchaseReturn(Base):
    """Units of a purchase's lines given back, and the ``reverse`` transaction that took their
    points back (none when they came to 0 points)."""

    __tablename__ = "purchase_return"
    __table_args__ = (
        CheckConstraint("points >= 0", name="points"),
        Index("ix_purchase_return_purchase_id", "purchase_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    purchase_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("purchase.id"))
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("ledger_transaction.id")
    )
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PurchaseReturnLine(Base):
    __tablename__ = "purchase_return_line"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity"),
        CheckConstraint("points >= 0", name="points"),
    )

    return_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("purchase_return.id"), primary_key=True
    )
    line: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
