"""A brand's programme metrics over business dates ``start`` .. ``end``, from the ledger.

Every figure is defined in the README ("Programme metrics"). In short, from the brand's
*member-days* (one per member and business date with a posting of its own: an earn, a burn, a
conversion, a donation, a transfer; a reversal or an expiry is not the member's doing): active
members are the distinct members with a member-day in a window; *earned* is what the brand
issued to its members, *burned* what they redeemed (captures included); a ratio is in basis
points, rounded down, beside its numerator and denominator; a cohort is the members whose first
earn fell in one calendar month. Each is one aggregate in the database over the rollup's rows
and, for the days not closed yet, the postings (:mod:`exchange.reporting.figures`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

from sqlalchemy import Table, case, distinct, exists, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.reporting import Cohort, ProgrammeMetrics, Ratio
from exchange.errors import PartnerNotFound
from exchange.pricing.service import values_in_force
from exchange.reporting import figures, live
from exchange.reporting.days import Day, calendar_or_default
from exchange.reporting.rollup import cohort_day_t, member_t, tune_for_reports, volume_t
from partners.models import Partner
from settlement.calendar import Calendar

partner_t = cast(Table, Partner.__table__)


def ratio(numerator: int, denominator: int) -> Ratio:
    """``numerator / denominator`` in basis points, rounded down (0 over 0)."""
    return Ratio(numerator, denominator, numerator * 10_000 // denominator if denominator else 0)


def _since(end: dt.date, days: int) -> dt.date:
    """The first date of the ``days`` business dates ending ``end``."""
    return end - dt.timedelta(days=days - 1)


async def _brand(session: AsyncSession, brand_id: uuid.UUID) -> str:
    currency = await session.scalar(
        select(partner_t.c.currency).where(partner_t.c.id == brand_id, partner_t.c.kind == "brand")
    )
    if currency is None:
        raise PartnerNotFound(f"no brand {brand_id}")
    return cast(str, currency)


async def _activity(
    session: AsyncSession, days: list[Day], brand_id: uuid.UUID, start: dt.date, end: dt.date
) -> Any:
    """Active members (30 and 90 days, the period), earned and burned in the period: one
    pass over the member-days, grouped by member (its latest member-day says in which windows
    it was active, as every window ends ``end``)."""
    md = figures.member_days(days, brand_id, min(start, _since(end, 90)), end)

    def in_period(column: Any) -> Any:
        return func.sum(case((md.c.business_date >= start, column), else_=0))

    members = (
        select(
            func.max(md.c.business_date).label("latest"),
            in_period(md.c.earned).label("earned"),
            in_period(md.c.burned).label("burned"),
        )
        .group_by(md.c.account_id)
        .subquery()
    )

    def active(since: dt.date) -> Any:
        return func.count(case((members.c.latest >= since, 1)))

    return (
        await session.execute(
            select(
                active(_since(end, 30)).label("active_30"),
                active(_since(end, 90)).label("active_90"),
                active(start).label("active_period"),
                func.coalesce(func.sum(members.c.earned), 0).label("earned"),
                func.coalesce(func.sum(members.c.burned), 0).label("burned"),
            )
        )
    ).one()


async def _repeat_earners(
    session: AsyncSession, days: list[Day], brand_id: uuid.UUID, start: dt.date, end: dt.date
) -> Ratio:
    """Members who earned in two or more calendar months of the period, over those who earned."""
    md = figures.member_days(days, brand_id, start, end)
    months = (
        select(func.count(distinct(md.c.month)).label("months"))
        .where(md.c.earned > 0)
        .group_by(md.c.account_id)
        .subquery()
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((months.c.months >= 2, 1), else_=0)), 0),
            ).select_from(months)
        )
    ).one()
    return ratio(int(row[1]), int(row[0]))


async def _breakage(
    session: AsyncSession, days: list[Day], brand_id: uuid.UUID, start: dt.date, end: dt.date
) -> int:
    """Points of ``expire`` transactions taken from the brand's members in the period: the
    stored volumes, and the open days' read live (only their ``expire`` transactions)."""
    stored = await session.scalar(
        select(func.coalesce(func.sum(volume_t.c.points_out), 0)).where(
            volume_t.c.brand_id == brand_id,
            volume_t.c.kind == "expire",
            volume_t.c.business_date.between(start, end),
        )
    )
    total = int(stored or 0)
    for day in days:
        if start <= day.date <= end:
            query = live.volumes(day.date, day.start, day.end).where(
                live.account_t.c.partner_id == brand_id, live.transaction_t.c.kind == "expire"
            )
            total += sum(int(row.points_out) for row in await session.execute(query))
    return total


async def programme_metrics(
    session: AsyncSession,
    brand_id: uuid.UUID,
    *,
    start: dt.date,
    end: dt.date,
    calendar: Calendar | None = None,
) -> ProgrammeMetrics:
    """The brand's programme metrics over ``start`` .. ``end`` (see the module's note);
    ``partner-not-found`` for an id that is not a brand's."""
    calendar = calendar_or_default(calendar)
    await tune_for_reports(session)
    currency = await _brand(session, brand_id)
    days = await figures.open_days(session, calendar, end)
    activity = await _activity(session, days, brand_id, start, end)
    earned, active = int(activity.earned), int(activity.active_period)
    value = next(
        (v.micros_per_point for v in await values_in_force(session) if v.partner_id == brand_id), 0
    )
    return ProgrammeMetrics(
        brand_id=brand_id,
        currency=currency,
        start=start,
        end=end,
        active_30_days=int(activity.active_30),
        active_90_days=int(activity.active_90),
        active_in_period=active,
        earned=earned,
        burned=int(activity.burned),
        redemption_rate=ratio(int(activity.burned), earned),
        breakage=await _breakage(session, days, brand_id, start, end),
        repeat_earn_rate=await _repeat_earners(session, days, brand_id, start, end),
        average_points_per_active_member=earned // active if active else 0,
        cohorts=await cohorts(session, days, brand_id, end, value),
    )


def _cohort_members(days: list[Day], brand_id: uuid.UUID, end: dt.date) -> tuple[Any, Any]:
    """Each member of the brand who first earned by ``end``, with its cohort: those the rollup
    recorded, and those whose first earn is on a day not closed yet; and the open days'
    member-days it read them from."""
    opened = figures.open_member_days([d for d in days if d.date <= end], brand_id)
    recorded = select(member_t.c.account_id, member_t.c.cohort).where(
        member_t.c.brand_id == brand_id, member_t.c.first_earn_date <= end
    )
    newcomers = (
        select(opened.c.account_id, func.min(opened.c.month).label("cohort"))
        .where(opened.c.earned > 0, ~exists().where(member_t.c.account_id == opened.c.account_id))
        .group_by(opened.c.account_id)
    )
    return union_all(recorded, newcomers).subquery("cohort_members"), opened


async def cohorts(
    session: AsyncSession, days: list[Day], brand_id: uuid.UUID, end: dt.date, value: int
) -> list[Cohort]:
    """Per cohort: its size, its members active in the 30 days ending ``end``, and what it
    earned up to ``end`` per member, in points and at the point value ``value``."""
    members, opened = _cohort_members(days, brand_id, end)
    recent = figures.member_days(days, brand_id, _since(end, 30), end)
    active = select(recent.c.account_id).distinct().subquery("active")
    sizes = await session.execute(
        select(members.c.cohort, func.count(), func.count(active.c.account_id))
        .outerjoin(active, active.c.account_id == members.c.account_id)
        .group_by(members.c.cohort)
    )
    earned: dict[dt.date, int] = {}
    stored = await session.execute(
        select(cohort_day_t.c.cohort, func.sum(cohort_day_t.c.earned))
        .where(cohort_day_t.c.brand_id == brand_id, cohort_day_t.c.business_date <= end)
        .group_by(cohort_day_t.c.cohort)
    )
    recently = await session.execute(
        select(members.c.cohort, func.sum(opened.c.earned))
        .join(members, members.c.account_id == opened.c.account_id)
        .where(opened.c.earned > 0)
        .group_by(members.c.cohort)
    )
    for month, points in [*stored, *recently]:
        earned[_date(month)] = earned.get(_date(month), 0) + int(points)
    found = []
    for month, size, kept in sizes:
        points = earned.get(_date(month), 0)
        found.append(
            Cohort(
                _date(month), size, kept, ratio(kept, size), points // size, points * value // size
            )
        )
    return sorted(found, key=lambda cohort: cohort.month)


def _date(value: Any) -> dt.date:
    """A date from a union's column (SQLite hands back the text of the literal ones)."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
