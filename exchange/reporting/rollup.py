"""The daily rollup: each business day, once closed, added up into the ``reporting_*`` tables.

Closing day ``D`` runs the report's own ``SELECT`` statements (:mod:`exchange.reporting.live`)
over the transactions created in ``[start, end)`` of ``D`` and stores what they give, then
records the members whose first earn fell on ``D`` (their cohort) and what each cohort earned
that day. Days are closed in order, one database transaction each, each starting where the
previous one ended, so the closed days tile time with no gap and no overlap.

When: a day is closed once its cutoff plus the settlement grace period has passed (as
settlement waits for the transactions in flight at the cutoff; on PostgreSQL a transaction is
stamped by the database's clock once its accounts are locked, so it commits within moments of
its stamp). Exactly once: every replica runs the loop, and a transaction-level advisory lock on
PostgreSQL (``BEGIN IMMEDIATE`` on SQLite) lets one close a day while the others find it closed
and skip it; the ``reporting_day`` row, written in the same transaction as the day's rows, is
what says it is closed. Running it again changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

import structlog
from sqlalchemy import Table, exists, func, insert, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql import Select

from exchange.base import utcnow
from exchange.db import session_maker
from exchange.dialect import is_postgresql, take_settlement_lock
from exchange.reporting import live
from exchange.reporting.days import Day
from exchange.reporting.models import (
    ReportingCohortDay,
    ReportingDay,
    ReportingDonation,
    ReportingFlow,
    ReportingMember,
    ReportingMemberDay,
    ReportingVolume,
)
from exchange.settings import Settings
from settlement.calendar import BusinessCalendar, Calendar

log = structlog.get_logger()

day_t = cast(Table, ReportingDay.__table__)
volume_t = cast(Table, ReportingVolume.__table__)
flow_t = cast(Table, ReportingFlow.__table__)
donation_t = cast(Table, ReportingDonation.__table__)
member_day_t = cast(Table, ReportingMemberDay.__table__)
member_t = cast(Table, ReportingMember.__table__)
cohort_day_t = cast(Table, ReportingCohortDay.__table__)

ROLLUP_LOCK_ID = 7_420_018
"""The PostgreSQL advisory lock a replica holds while it closes a day (any fixed number)."""


async def tune_for_reports(session: AsyncSession) -> None:
    """On PostgreSQL, for the rest of the caller's transaction: price random reads as an SSD
    does (``random_page_cost`` 1.1, not the spinning disk's 4), so that a day's transactions
    are joined to their postings through the posting index rather than by a scan of every
    posting, and no JIT (compiling costs more than these plans run)."""
    if is_postgresql(session):
        await session.execute(
            text(
                "SELECT set_config('random_page_cost', '1.1', true), set_config('jit', 'off', true)"
            )
        )


async def last_closed(session: AsyncSession) -> Any:
    """The latest closed day's row (``business_date``, ``end_at``), or ``None``."""
    return (
        await session.execute(
            select(day_t.c.business_date, day_t.c.end_at)
            .order_by(day_t.c.business_date.desc())
            .limit(1)
        )
    ).first()


async def next_day(session: AsyncSession, calendar: Calendar) -> Day | None:
    """The first day not closed: the one after the latest closed day (starting where it
    ended), or, before any, the day of the first transaction; ``None`` before any transaction."""
    closed = await last_closed(session)
    if closed is not None:
        date = closed.business_date + dt.timedelta(days=1)
        return Day(date, closed.end_at, calendar.cutoff_at(date))
    first = await session.scalar(select(func.min(live.transaction_t.c.created_at)))
    if first is None:
        return None
    date = calendar.business_date_of(first)
    return Day(date, calendar.cutoff_at(date - dt.timedelta(days=1)), calendar.cutoff_at(date))


async def _store(session: AsyncSession, table: Table, query: Select[Any]) -> None:
    await session.execute(
        insert(table).from_select([column.name for column in query.selected_columns], query)
    )


def _first_earns(day: Day) -> Select[Any]:
    """The members whose first earn is on ``day`` (none of theirs is recorded yet)."""
    md = member_day_t
    return select(
        md.c.account_id, md.c.brand_id, md.c.business_date.label("first_earn_date"),
        md.c.month.label("cohort"),
    ).where(
        md.c.business_date == day.date,
        md.c.earned > 0,
        ~exists().where(member_t.c.account_id == md.c.account_id),
    )  # fmt: skip


def _cohort_earnings(day: Day) -> Select[Any]:
    md = member_day_t
    return (
        select(
            md.c.brand_id,
            member_t.c.cohort,
            literal(day.date).label("business_date"),
            func.sum(md.c.earned).label("earned"),
        )
        .join(member_t, member_t.c.account_id == md.c.account_id)
        .where(md.c.business_date == day.date, md.c.earned > 0)
        .group_by(md.c.brand_id, member_t.c.cohort)
    )


async def close_day(session: AsyncSession, day: Day) -> None:
    """Store ``day``'s figures, in the caller's transaction (which holds the rollup lock)."""
    await session.execute(
        insert(day_t).values(
            business_date=day.date, start_at=day.start, end_at=day.end, closed_at=utcnow()
        )
    )
    await _store(session, volume_t, live.volumes(day.date, day.start, day.end))
    await _store(session, flow_t, live.flows(day.date, day.start, day.end))
    await _store(session, donation_t, live.donations(day.date, day.start, day.end))
    await _store(session, member_day_t, live.member_days(day.date, day.start, day.end))
    await _store(session, member_t, _first_earns(day))
    await _store(session, cohort_day_t, _cohort_earnings(day))


async def close_due_days(
    sessions: async_sessionmaker[AsyncSession],
    calendar: Calendar,
    *,
    now: dt.datetime | None = None,
    grace: dt.timedelta = dt.timedelta(0),
) -> list[dt.date]:
    """Close every day whose cutoff plus ``grace`` is at or before ``now`` (default: the
    clock), oldest first, one transaction each; the dates this call closed. A replica that
    finds another closing leaves the work to it."""
    closed: list[dt.date] = []
    while True:
        moment = now or utcnow()
        async with sessions() as session, session.begin():
            if not await take_settlement_lock(session, ROLLUP_LOCK_ID, wait=False):
                return closed
            await tune_for_reports(session)
            day = await next_day(session, calendar)
            if day is None or day.end + grace > moment:
                return closed
            await close_day(session, day)
        closed.append(day.date)


async def run_rollup(engine: AsyncEngine, settings: Settings) -> None:
    """Close the due days now and every ``settlement_poll_seconds``, until cancelled; returns
    at once when the scheduler is switched off."""
    if not settings.scheduler:
        return
    sessions = session_maker(engine)
    calendar = BusinessCalendar.from_settings(settings)
    grace = dt.timedelta(seconds=settings.settlement_grace_seconds)
    while True:
        try:
            days = await close_due_days(sessions, calendar, grace=grace)
            if days:
                log.info("reporting days closed", first=days[0].isoformat(), days=len(days))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing reporting days failed; retrying")
        await asyncio.sleep(settings.settlement_poll_seconds)
