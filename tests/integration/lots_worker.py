"""An expiry run in a process of its own: ``python -m tests.integration.lots_worker CUTOFF``
expires every lot due by ``CUTOFF`` (ISO 8601) in the database of ``EXCHANGE_*`` and prints
``members points`` it expired."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

from exchange.db import create_engine, session_maker
from exchange.ledger.lot_expiry import expire_lots
from exchange.settings import get_settings


async def _run(cutoff: dt.datetime) -> None:
    engine = create_engine(get_settings())
    try:
        totals = await expire_lots(session_maker(engine), cutoff, chunk=50)
    finally:
        await engine.dispose()
    print(totals.members, totals.points, flush=True)


if __name__ == "__main__":
    asyncio.run(_run(dt.datetime.fromisoformat(sys.argv[1])))
