"""What the service does for the log by itself: extend it every second, sign a checkpoint every
``EXCHANGE_LOG_CHECKPOINT_SECONDS``. Every replica runs it; the sequencer lock lets one work."""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from exchange.db import session_maker
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from exchange.transparency.checkpoints import CheckpointView, make_checkpoint
from exchange.transparency.sequencer import extend_log

log = structlog.get_logger()
EXTEND_SECONDS = 1.0


async def checkpoint_now(
    session: AsyncSession, settings: Settings, keys: ExchangeKeys, reason: str
) -> CheckpointView | None:
    """Extend the log and sign a checkpoint, in the caller's transaction (settlement calls it at
    each cutoff with ``reason="cutoff"``, and then waits for the sequencer lock)."""
    return await make_checkpoint(
        session, keys, settings.log_origin, settings.log_late_seconds, reason
    )


async def run_log(engine: AsyncEngine, settings: Settings, keys: ExchangeKeys) -> None:
    """Until cancelled; returns at once when the scheduler is switched off."""
    if not settings.scheduler:
        return
    sessions = session_maker(engine)
    next_checkpoint = time.monotonic() + settings.log_checkpoint_seconds
    while True:
        try:
            async with sessions() as session, session.begin():
                if time.monotonic() >= next_checkpoint:
                    await checkpoint_now(session, settings, keys, "interval")
                    next_checkpoint = time.monotonic() + settings.log_checkpoint_seconds
                else:
                    await extend_log(session, settings.log_late_seconds, wait=False)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("extending the transaction log failed; retrying")
        await asyncio.sleep(EXTEND_SECONDS)
