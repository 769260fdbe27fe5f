"""Tables of pricing: point values, rate versions and quotes.

Point values and rate versions are effective-dated and immutable: a new row supersedes, none is
ever updated or deleted (on both databases a trigger refuses it). The version in force at a time
``T`` is the one with the greatest ``effective_at <= T``. A quote is the one row that changes, and
only once: ``used_at`` goes from NULL to the time a conversion spent it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow, uuid7
from exchange.contract.types import MAX_MICROS_PER_POINT


class PointValue(Base):
    """What one point of a brand is worth in settlement micros, from ``effective_at`` on."""

    __tablename__ = "point_value"
    __table_args__ = (
        UniqueConstraint("partner_id", "effective_at"),
        CheckConstraint(
            f"micros_per_point > 0 AND micros_per_point <= {MAX_MICROS_PER_POINT}",
            name="micros_per_point",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    micros_per_point: Mapped[int] = mapped_column(BigInteger)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RateVersion(Base):
    """``to_points`` of the destination brand per ``from_points`` of the source brand, with a fee
    and a minimum, from ``effective_at`` on. Every conversion records the version it used."""

    __tablename__ = "rate_version"
    __table_args__ = (
        UniqueConstraint("from_partner_id", "to_partner_id", "effective_at"),
        CheckConstraint("from_partner_id <> to_partner_id", name="distinct_brands"),
        CheckConstraint("from_points > 0 AND to_points > 0", name="points"),
        CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name="fee_bps"),
        CheckConstraint("min_points >= 0", name="min_points"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    from_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    to_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    from_points: Mapped[int] = mapped_column(BigInteger)
    to_points: Mapped[int] = mapped_column(BigInteger)
    fee_bps: Mapped[int] = mapped_column(SmallInteger)
    min_points: Mapped[int] = mapped_column(BigInteger, default=0)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Quote(Base):
    """A conversion priced in advance: the rate version and both point values, and the amounts
    they give, held for the caller until ``expires_at``; spent once (``used_at``)."""

    __tablename__ = "quote"
    __table_args__ = (
        CheckConstraint("points > 0", name="points"),
        CheckConstraint("fee >= 0 AND fee <= points", name="fee"),
        CheckConstraint("out > 0", name="out"),
        CheckConstraint("source_value_micros > 0 AND destination_value_micros > 0", name="values"),
        CheckConstraint("expires_at > created_at", name="expiry"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    """The caller: the source brand, the only partner that may spend the quote."""
    rate_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("rate_version.id"))
    from_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    to_partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    member_ref: Mapped[str] = mapped_column(String(128))
    to_member_ref: Mapped[str] = mapped_column(String(128))
    points: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    out: Mapped[int] = mapped_column(BigInteger)
    source_value_micros: Mapped[int] = mapped_column(BigInteger)
    destination_value_micros: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
