"""A settlement run in a process of its own, for the tests that kill one half-way.

    python -m tests.integration.settlement_worker --date D --cutoff ISO [--pause-after STEP]

Settles one business date (ending at ``--cutoff``) against the database of ``EXCHANGE_*``. With
``--pause-after``, once ``settle_day`` reports that step done (inside its still open database
transaction) it prints ``PAUSED <step>`` and sleeps until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time

from exchange.db import create_engine, session_maker
from exchange.settings import get_settings
from exchange.signing import load_exchange_keys
from settlement.runs import settle_day
from tests.integration.settlement_support import SteppedCalendar


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--cutoff", type=dt.datetime.fromisoformat, required=True)
    parser.add_argument("--pause-after", default=None)
    args = parser.parse_args()
    settings = get_settings()
    calendar = SteppedCalendar(args.date, args.cutoff, dt.timedelta(hours=1))

    def on_step(_day: dt.date, step: str) -> None:
        if step == args.pause_after:
            print(f"PAUSED {step}", flush=True)
            time.sleep(3600)

    async def run() -> None:
        engine = create_engine(settings)
        try:
            batch = await settle_day(
                session_maker(engine), args.date, settings=settings,
                keys=load_exchange_keys(settings), calendar=calendar, on_step=on_step,
            )  # fmt: skip
        finally:
            await engine.dispose()
        print(json.dumps(batch.as_dict()), flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
