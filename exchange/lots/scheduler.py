"""The expiry loop: after each business day's cutoff (and its grace period), every lot due by
then expires, unless ``EXCHANGE_SCHEDULER=0``. Every replica runs it; a run is exactly once by
construction (``exchange.ledger.lot_expiry``), so replicas at one cutoff share the members
between them rather than expiring any twice."""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.base import utcnow
from exchange.db import session_maker
from exchange.lots.service import run_expiry
from exchange.settings import Settings
from settlement.calendar import BusinessCalendar

log = structlog.get_logger()


def seconds_until_expiry(calendar: BusinessCalendar, settings: Settings, now: dt.datetime) -> float:
    """Until the current business day's cutoff plus the grace period, or the poll interval."""
    grace = dt.timedelta(seconds=settings.settlement_grace_seconds)
    due = calendar.cutoff_at(calendar.business_date_of(now - grace)) + grace
    return max(0.0, min((due - now).total_seconds(), float(settings.settlement_poll_seconds)))


async def run_expiry_loop(engine: AsyncEngine, settings: Settings) -> None:
    """Expire what is due now and after each cutoff, until cancelled."""
    if not settings.scheduler:
        return
    sessions = session_maker(engine)
    calendar = BusinessCalendar.from_settings(settings)
    while True:
        try:
            run = await run_expiry(sessions, settings)
            if run.members or run.notices:
                log.info(
                    "points expired",
                    cutoff=run.cutoff.isoformat(),
                    members=run.members,
                    points=run.points,
                    notices=run.notices,
                )
        except Exception:
            log.exception("expiry run failed")
        await asyncio.sleep(seconds_until_expiry(calendar, settings, utcnow()))
