"""A report's rows for business dates ``first`` .. ``last``: from the rollup for the days it has
closed, from the postings (:mod:`exchange.reporting.live`) for the others."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from exchange.reporting import live
from exchange.reporting.days import dates, day_of
from settlement.calendar import Calendar

LiveQuery = Callable[[dt.date, dt.datetime, dt.datetime], Select[Any]]


async def _rows(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date, query: LiveQuery
) -> Sequence[Any]:
    rows: list[Any] = []
    for date in dates(first, last):
        day = day_of(calendar, date)
        rows.extend(await session.execute(query(day.date, day.start, day.end)))
    return rows


async def volumes(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    return await _rows(session, calendar, first, last, live.volumes)


async def flows(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    return await _rows(session, calendar, first, last, live.flows)


async def donations(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    return await _rows(session, calendar, first, last, live.donations)


async def member_days(
    session: AsyncSession, calendar: Calendar, first: dt.date, last: dt.date
) -> Sequence[Any]:
    return await _rows(session, calendar, first, last, live.member_days)
