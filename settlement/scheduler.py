"""The settlement scheduler: what the service does by itself, unless ``EXCHANGE_SCHEDULER=0``.

Two loops: one settles every ended business day, at start (catching up missed days in order)
and after each cutoff; the other sends the webhooks that are due. Every replica runs both; the
settlement advisory lock and the outbox's ``SKIP LOCKED`` claims make replicas share the work
instead of repeating it (a replica that finds another settling leaves the day to it).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.base import utcnow
from exchange.db import session_maker
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from settlement.calendar import BusinessCalendar, Calendar
from settlement.runs import settle_due
from settlement.webhooks import deliver_due_webhooks

log = structlog.get_logger()


async def run_scheduler(engine: AsyncEngine, settings: Settings, keys: ExchangeKeys) -> None:
    """Run both loops until cancelled (at shutdown); returns at once when switched off."""
    if not settings.scheduler:
        return
    await asyncio.gather(
        settle_days(engine, settings, keys), deliver_webhooks(engine, settings, keys)
    )


def seconds_until_settlement(calendar: Calendar, settings: Settings, now: dt.datetime) -> float:
    """Until the current business day's cutoff plus the grace period, or the poll interval if
    that comes first (so that a run that failed is retried)."""
    grace = dt.timedelta(seconds=settings.settlement_grace_seconds)
    due = calendar.cutoff_at(calendar.business_date_of(now - grace)) + grace
    return max(0.0, min((due - now).total_seconds(), float(settings.settlement_poll_seconds)))


async def settle_days(engine: AsyncEngine, settings: Settings, keys: ExchangeKeys) -> None:
    """Settle every ended business day, now and after each cutoff."""
    sessions = session_maker(engine)
    calendar = BusinessCalendar.from_settings(settings)
    while True:
        try:
            for batch in await settle_due(
                sessions, settings=settings, keys=keys, calendar=calendar
            ):
                log.info(
                    "business day settled",
                    business_date=batch.business_date.isoformat(),
                    postings=batch.postings,
                    participants=len(batch.positions),
                )
        except Exception:
            log.exception("settlement failed")
        await asyncio.sleep(seconds_until_settlement(calendar, settings, utcnow()))


async def deliver_webhooks(engine: AsyncEngine, settings: Settings, keys: ExchangeKeys) -> None:
    """Send due webhooks every ``webhook_poll_seconds``, and at once again after a full round."""
    sessions = session_maker(engine)
    async with httpx.AsyncClient(follow_redirects=False) as client:
        while True:
            full = False
            try:
                report = await deliver_due_webhooks(
                    sessions, settings=settings, keys=keys, client=client
                )
                if report.delivered or report.failed:
                    log.info("webhooks sent", delivered=report.delivered, failed=report.failed)
                full = report.delivered + report.failed >= settings.webhook_batch_size
            except Exception:
                log.exception("webhook delivery failed")
            if not full:
                await asyncio.sleep(settings.webhook_poll_seconds)
