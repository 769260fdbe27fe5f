"""Background work the service does by itself while it runs."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from exchange.base import utcnow
from exchange.http.idempotency import purge_expired_records
from exchange.http.signatures import purge_expired_nonces
from exchange.ledger.expiry import release_expired_holds
from partners.key_use import fold_last_use

log = structlog.get_logger()

SWEEP_SECONDS = 30


async def run_periodic_jobs(engine: AsyncEngine) -> None:
    """Every ``SWEEP_SECONDS``: release expired holds (they also lapse lazily on access) and
    forget replay nonces (each key's last use kept first) and idempotency records past their
    windows."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            async with AsyncSession(engine) as session, session.begin():
                released = await release_expired_holds(session)
            if released:
                log.info("holds released", accounts=released)
            async with engine.begin() as conn:
                now = utcnow()
                await fold_last_use(conn, now)
                nonces = await purge_expired_nonces(conn, now)
                records = await purge_expired_records(conn, now)
            if nonces or records:
                log.info("expired request state purged", nonces=nonces, idempotency=records)
        except Exception:
            log.exception("periodic sweep failed")
