"""A brand's programme metrics over business dates ``start`` .. ``end``, from the ledger.

Every figure is defined in the README ("Programme metrics"); in short, from the member-days
(one row per member and business date with any posting of its own: an earn, a burn, a
conversion, a donation, a transfer; not a reversal or an expiry):
active members are the distinct members with a member-day in the window, earned and burned are
the points issued to and redeemed by members, a ratio is in basis points rounded down, and a
cohort is the members whose first earn fell in one calendar month.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.reporting import Cohort, ProgrammeMetrics, Ratio
from exchange.errors import PartnerNotFound
from exchange.ledger.models import LedgerTransaction
from exchange.pricing.service import values_in_force
from exchange.reporting import figures
from exchange.reporting.days import calendar_or_default, month_of
from partners.models import Partner
from settlement.calendar import Calendar

partner_t = cast(Table, Partner.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)

ACTIVE_WINDOWS = (30, 90)


def ratio(numerator: int, denominator: int) -> Ratio:
    """``numerator / denominator`` in basis points, rounded down (0 over 0)."""
    return Ratio(numerator, denominator, numerator * 10_000 // denominator if denominator else 0)


async def _brand(session: AsyncSession, brand_id: uuid.UUID) -> str:
    currency = await session.scalar(
        select(partner_t.c.currency).where(partner_t.c.id == brand_id, partner_t.c.kind == "brand")
    )
    if currency is None:
        raise PartnerNotFound(f"no brand {brand_id}")
    return cast(str, currency)


async def _first_date(session: AsyncSession, calendar: Calendar, start: dt.date) -> dt.date:
    first = await session.scalar(select(func.min(transaction_t.c.created_at)))
    return start if first is None else min(start, calendar.business_date_of(first))


async def programme_metrics(
    session: AsyncSession,
    brand_id: uuid.UUID,
    *,
    start: dt.date,
    end: dt.date,
    calendar: Calendar | None = None,
) -> ProgrammeMetrics:
    """The brand's programme metrics over ``start`` .. ``end`` (see the module's note)."""
    calendar = calendar_or_default(calendar)
    currency = await _brand(session, brand_id)
    first = await _first_date(session, calendar, min(start, end - dt.timedelta(days=89)))
    rows = [
        row
        for row in await figures.member_days(session, calendar, first, end)
        if row.brand_id == brand_id
    ]
    windows = {n: end - dt.timedelta(days=n - 1) for n in ACTIVE_WINDOWS}
    active = {
        n: {r.account_id for r in rows if r.business_date >= since} for n, since in windows.items()
    }
    period = [r for r in rows if start <= r.business_date <= end]
    earned = sum(int(r.earned) for r in period)
    burned = sum(int(r.burned) for r in period)
    in_period = {r.account_id for r in period}
    months: dict[int, set[dt.date]] = defaultdict(set)
    for r in period:
        if r.earned:
            months[r.account_id].add(month_of(r.business_date))
    expired = sum(
        int(row.points_out)
        for row in await figures.volumes(session, calendar, start, end)
        if row.brand_id == brand_id and row.kind == "expire"
    )
    value = next(
        (v.micros_per_point for v in await values_in_force(session) if v.partner_id == brand_id), 0
    )
    return ProgrammeMetrics(
        brand_id=brand_id,
        currency=currency,
        start=start,
        end=end,
        active_30_days=len(active[30]),
        active_90_days=len(active[90]),
        active_in_period=len(in_period),
        earned=earned,
        burned=burned,
        redemption_rate=ratio(burned, earned),
        breakage=expired,
        repeat_earn_rate=ratio(sum(1 for m in months.values() if len(m) >= 2), len(months)),
        average_points_per_active_member=earned // len(in_period) if in_period else 0,
        cohorts=_cohorts(rows, active[30], value),
    )


def _cohorts(rows: list[Any], retained: set[int], value: int) -> list[Cohort]:
    first_earn: dict[int, dt.date] = {}
    earned: dict[int, int] = defaultdict(int)
    for row in sorted(rows, key=lambda r: r.business_date):
        if row.earned:
            first_earn.setdefault(row.account_id, row.business_date)
            earned[row.account_id] += int(row.earned)
    members: dict[dt.date, list[int]] = defaultdict(list)
    for account, date in first_earn.items():
        members[month_of(date)].append(account)
    cohorts = []
    for month, accounts in sorted(members.items()):
        size = len(accounts)
        points = sum(earned[a] for a in accounts)
        kept = sum(1 for a in accounts if a in retained)
        cohorts.append(
            Cohort(month, size, kept, ratio(kept, size), points // size, points * value // size)
        )
    return cohorts
