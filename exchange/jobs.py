"""Background work the service does by itself while it runs."""

from __future__ import annotations

import asyncio

import structlog
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.ledger.engine import release_expired_holds
from exchange.settings import Settings

log = structlog.get_logger()

HOLD_SWEEP_SECONDS = 30


async def run_periodic_jobs(app: Litestar, settings: Settings) -> None:
    """Release expired holds every ``HOLD_SWEEP_SECONDS`` (holds also lapse lazily on access)."""
    engine = app.state.db_engine
    while True:
        await asyncio.sleep(HOLD_SWEEP_SECONDS)
        try:
            async with AsyncSession(engine) as session, session.begin():
                released = await release_expired_holds(session)
            if released:
                log.info("holds released", accounts=released)
        except Exception:
            log.exception("hold sweep failed")
