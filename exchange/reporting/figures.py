"""A report's rows for business dates ``first`` .. ``last``: from the rollup for the days it has
closed, from the postings (:mod:`exchange.reporting.live`) for the others.

The days not closed are those after the latest closed one (the rollup closes days in order);
each is read with the same ``SELECT`` the rollup would store for it, bounded by its cutoffs, and
only up to the day of ``now`` (nothing is posted later). With the rollup current that is today,
and yesterday for the few seconds between a cutoff and its closing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, false, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from exchange.base import utcnow
from exchange.reporting import live
from exchange.reporting.days import Day
from exchange.reporting.rollup import (
    donation_t,
    flow_t,
    member_day_t,
    next_day,
    volume_t,
)
from settlement.calendar import Calendar

LiveQuery = Callable[[dt.date, dt.datetime, dt.datetime], Select[Any]]


async def open_days(
    session: AsyncSession, calendar: Calendar, last: dt.date, now: dt.datetime | None = None
) -> list[Day]:
    """The days not closed up to ``last`` and to the day of ``now`` (default: the clock)."""
    day = await next_day(session, calendar)
    if day is None:
        return []
    through = min(last, calendar.business_date_of(now or utcnow()))
    days = []
    while day.date <= through:
        days.append(day)
        following = day.date + dt.timedelta(days=1)
        day = Day(following, day.end, calendar.cutoff_at(following))
    return days


async def _rows(
    session: AsyncSession,
    calendar: Calendar,
    first: dt.date,
    last: dt.date,
    table: Table,
    query: LiveQuery,
) -> Sequence[Any]:
    rows: list[Any] = list(
        await session.execute(select(table).where(table.c.business_date.between(first, last)))
    )
    for day in await open_days(session, calendar, last):
        if day.date >= first:
            rows.extend(await session.execute(query(day.date, day.start, day.end)))
    return rows


async def volumes(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    """``reporting_volume`` rows of the days."""
    return await _rows(session, calendar, first, last, volume_t, live.volumes)


async def flows(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    """``reporting_flow`` rows of the days."""
    return await _rows(session, calendar, first, last, flow_t, live.flows)


async def donations(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    """``reporting_donation`` rows of the days."""
    return await _rows(session, calendar, first, last, donation_t, live.donations)


def _live_member_days(days: Sequence[Day], brand_id: uuid.UUID) -> list[Select[Any]]:
    return [
        live.member_days(day.date, day.start, day.end).where(
            live.account_t.c.partner_id == brand_id
        )
        for day in days
    ]


def member_days(days: Sequence[Day], brand_id: uuid.UUID, first: dt.date, last: dt.date) -> Any:
    """The brand's member-days of ``first`` .. ``last`` as one subquery (columns as
    ``reporting_member_day``'s): the stored ones and those of the open ``days`` among them."""
    stored = select(*(member_day_t.c[name] for name in live.MEMBER_DAY_COLUMNS)).where(
        member_day_t.c.brand_id == brand_id, member_day_t.c.business_date.between(first, last)
    )
    opened = [day for day in days if first <= day.date <= last]
    return union_all(stored, *_live_member_days(opened, brand_id)).subquery("member_days")


def open_member_days(days: Sequence[Day], brand_id: uuid.UUID) -> Any:
    """The brand's member-days of the open ``days`` alone, as one subquery."""
    if not days:
        columns = (member_day_t.c[name] for name in live.MEMBER_DAY_COLUMNS)
        return select(*columns).where(false()).subquery("open_member_days")
    return union_all(*_live_member_days(days, brand_id)).subquery("open_member_days")
