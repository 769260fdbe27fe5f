"""Tables of the daily rollup: what each closed business day's postings add up to.

A row is written once, when its day is closed (:mod:`exchange.reporting.rollup`), and never
changed: the figures of a closed day are those of its postings, which never change either. The
rollup is derived data: every row can be computed again from the ledger (the same ``SELECT``
does it live for the days not yet closed), so nothing here is chained or signed.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Date, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow
from exchange.ledger.models import LedgerTransaction


class ReportingDay(Base):
    """A business date the rollup holds: its rows below are complete."""

    __tablename__ = "reporting_day"

    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """The day's cutoffs: it covers the transactions created in ``[start_at, end_at)``."""
    closed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReportingVolume(Base):
    """Per day, brand and transaction kind: points credited to and debited from its members."""

    __tablename__ = "reporting_volume"

    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    points_in: Mapped[int] = mapped_column(BigInteger)
    points_out: Mapped[int] = mapped_column(BigInteger)
    postings: Mapped[int] = mapped_column(BigInteger)


class ReportingFlow(Base):
    """Per day and pair of brands: the conversions from one to the other."""

    __tablename__ = "reporting_flow"

    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    from_brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    to_brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    points_out: Mapped[int] = mapped_column(BigInteger)
    points_in: Mapped[int] = mapped_column(BigInteger)
    conversions: Mapped[int] = mapped_column(BigInteger)


class ReportingDonation(Base):
    """Per day, charity and brand: the donations and the money owed for them."""

    __tablename__ = "reporting_donation"

    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    charity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    value_micros: Mapped[int] = mapped_column(BigInteger)
    donations: Mapped[int] = mapped_column(BigInteger)


class ReportingMemberDay(Base):
    """A member active on a day (a posting of its own), with what it earned and burned."""

    __tablename__ = "reporting_member_day"

    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    month: Mapped[dt.date] = mapped_column(Date)
    """The first day of the business date's month (so that months need no date function)."""
    earned: Mapped[int] = mapped_column(BigInteger)
    burned: Mapped[int] = mapped_column(BigInteger)


class ReportingMember(Base):
    """A member's first earn: its cohort."""

    __tablename__ = "reporting_member"
    __table_args__ = (Index("ix_reporting_member_brand_id_cohort", "brand_id", "cohort"),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    first_earn_date: Mapped[dt.date] = mapped_column(Date)
    cohort: Mapped[dt.date] = mapped_column(Date)
    """The first day of the month of ``first_earn_date``."""


class ReportingCohortDay(Base):
    """Per brand, cohort and day: the points its members earned."""

    __tablename__ = "reporting_cohort_day"

    brand_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    cohort: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    business_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    earned: Mapped[int] = mapped_column(BigInteger)


# The live part of a report and the closing of a day read the transactions of one day by their
# creation time: this index bounds both to that day's rows.
Index("ix_ledger_transaction_created_at", LedgerTransaction.__table__.c.created_at)
