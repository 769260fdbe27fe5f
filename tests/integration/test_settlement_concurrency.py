"""Settlement under concurrency and failure, on PostgreSQL: writers posting across cutoffs, runs
killed half-way, and several replicas (and CLI processes) settling at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import sys
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.db import create_engine, session_maker
from exchange.outbox import OutboxEvent
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from settlement.calendar import BusinessCalendar, parse_cutoff
from settlement.models import SettlementBatch, SettlementStatement
from settlement.payments import mark_paid
from settlement.runs import settle_day, settle_due
from settlement.views import get_batch
from tests.integration.settlement_support import (
    DAY1,
    DAY1_INSTRUCTIONS,
    DAY1_MATRIX,
    DAY1_POSITIONS,
    SETTLED,
    Cast,
    SteppedCalendar,
    named_instructions,
    named_matrix,
    named_positions,
    post_day1,
    post_money,
)

pytestmark = pytest.mark.postgres_only

ROOT = Path(__file__).resolve().parents[2]
HOUR = dt.timedelta(hours=1)


async def _sleep_until(instant: dt.datetime) -> None:
    await asyncio.sleep(max(0.0, (instant - utcnow()).total_seconds()))


async def _count(session: AsyncSession, sql: str, **params: object) -> int:
    return int(await session.scalar(text(sql), params) or 0)


async def test_writers_across_cutoffs_put_every_posting_in_exactly_one_batch(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    step = dt.timedelta(seconds=0.6)
    first = dt.date(2026, 11, 20)
    calendar = SteppedCalendar(first, utcnow() + step, step)
    days = [first + dt.timedelta(days=k) for k in range(5)]
    stop_at = calendar.cutoff_at(days[3]) + dt.timedelta(seconds=0.2)
    late_may_commit = asyncio.Event()
    brands = [cast.sky, cast.htl, cast.ret]

    async def writer(seed: int) -> int:
        rng = random.Random(seed)
        made = 0
        while utcnow() < stop_at:
            source, destination = rng.sample(brands, 2)
            out, fee = rng.randrange(1, 10**8), rng.randrange(0, 10**6)
            async with sessions() as session, session.begin():
                if rng.random() < 0.25:
                    await post_money(
                        session,
                        "donate",
                        source,
                        [(source, -out), (cast.aid, out)],
                        shard=seed % 3,
                    )
                else:
                    await post_money(
                        session,
                        "convert",
                        source,
                        [(source, -(out + fee)), (destination, out), (cast.op, fee)],
                        shard=seed % 3,
                    )
                # Commit a little after the postings' created_at, as a real request does.
                await asyncio.sleep(rng.random() * 0.02)
            made += 1
        return made

    async def late_writer() -> uuid.UUID:
        """Created before the second cutoff, committed only once that day is settled."""
        await _sleep_until(calendar.cutoff_at(days[1]) - dt.timedelta(seconds=0.15))
        async with sessions() as session, session.begin():
            posted = await post_money(
                session,
                "convert",
                cast.htl,
                [(cast.htl, -505), (cast.sky, 500), (cast.op, 5)],
                shard=3,
            )
            await late_may_commit.wait()
        return posted.id

    async def settler() -> None:
        for k, day in enumerate(days[:4]):
            await _sleep_until(calendar.cutoff_at(day))
            await settle_day(sessions, day, settings=settings, keys=keys, calendar=calendar)
            if k == 0:
                # Its settle transaction lands among the writers' postings, in no batch.
                async with sessions() as session, session.begin():
                    await mark_paid(session, day)
            if k == 1:
                late_may_commit.set()

    *made, late_id, _ = await asyncio.gather(
        *(writer(seed) for seed in range(6)), late_writer(), settler()
    )
    assert all(made), made  # every writer got its transactions in, however loaded the machine
    await _sleep_until(calendar.cutoff_at(days[4]))
    last = await settle_day(sessions, days[4], settings=settings, keys=keys, calendar=calendar)
    assert last.postings > 0

    async with sessions() as session:
        money = """
            FROM posting p JOIN ledger_transaction t ON t.id = p.transaction_id
            WHERE p.ledger = 'EUR' AND t.kind <> 'settle'
        """
        postings = await _count(session, f"SELECT count(*) {money}")
        settled = f"({SETTLED}) e"
        assert postings == await _count(session, f"SELECT count(*) FROM {settled}")
        assert (
            await _count(
                session,
                f"SELECT count(*) {money} AND NOT EXISTS"
                f" (SELECT 1 FROM {settled} WHERE e.posting_id = p.id)",
            )
            == 0
        )
        # No posting is in two batches, no transaction is split between batches, and every
        # batch counts what it took.
        assert (
            await _count(
                session,
                f"SELECT count(*) FROM (SELECT posting_id FROM {settled}"
                " GROUP BY posting_id HAVING count(*) > 1) twice",
            )
            == 0
        )
        assert (
            await _count(
                session,
                f"SELECT count(*) FROM (SELECT transaction_id FROM {settled}"
                " GROUP BY transaction_id HAVING count(DISTINCT batch_id) > 1) split",
            )
            == 0
        )
        assert postings == await _count(session, "SELECT sum(postings) FROM settlement_batch")
        batches = (await session.execute(select(SettlementBatch))).all()
        assert [b.SettlementBatch.business_date for b in batches] == days
        for (batch,) in batches:
            total, newest = (
                await session.execute(
                    text(f"SELECT sum(amount), max(created_at) FROM {settled} WHERE batch_id = :b"),
                    {"b": batch.id},
                )
            ).one()
            assert total == 0
            assert newest < batch.cutoff_at  # nothing made after a cutoff is in its day
            view = await get_batch(session, batch.business_date)
            unit = 10_000
            for p in view.positions:
                assert (
                    p.payout_minor * unit + p.carry_out_micros == p.net_micros + p.carry_in_micros
                )
            assert sum(p.payout_minor for p in view.positions) == 0
        # The transaction that committed after its day was settled is in the next day.
        late_batch = await session.scalar(
            text(f"SELECT min(batch_id) FROM {settled} WHERE transaction_id = :t"),
            {"t": late_id},
        )
        assert late_batch == (await get_batch(session, days[2])).id


@pytest.mark.parametrize("pause_after", ["ranges", "statements"])
async def test_a_run_killed_half_way_leaves_nothing_to_double(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    cast: Cast,
    tmp_path: Path,
    pause_after: str,
) -> None:
    postings = await post_day1(sessions, cast)
    await asyncio.sleep(0.002)
    cutoff = utcnow()
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.settlement_worker",
        "--date",
        DAY1.isoformat(),
        "--cutoff",
        cutoff.isoformat(),
        "--pause-after",
        pause_after,
        cwd=ROOT,
        env=_env(settings, tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
        assert line.decode().strip() == f"PAUSED {pause_after}"
        async with sessions() as session:
            # Mid-way: what it wrote is in its open transaction, which nobody else sees.
            assert await _count(session, "SELECT count(*) FROM settlement_batch") == 0
            assert await _count(session, "SELECT count(*) FROM settlement_range") == 0
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    assert worker.returncode == -signal.SIGKILL

    calendar = SteppedCalendar(DAY1, cutoff, HOUR)
    batch = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    assert (batch.status, batch.postings) == ("complete", postings)
    assert named_matrix(cast, batch.obligations) == DAY1_MATRIX
    assert named_positions(cast, batch.positions) == DAY1_POSITIONS
    assert named_instructions(cast, batch.instructions) == DAY1_INSTRUCTIONS
    async with sessions() as session:
        assert await _count(session, "SELECT count(*) FROM settlement_batch") == 1
        assert await _count(session, f"SELECT count(*) FROM ({SETTLED}) e") == postings
        for table in (OutboxEvent, SettlementStatement):
            assert await session.scalar(select(func.count()).select_from(table)) == 5


async def test_replicas_settling_at_once_settle_each_day_once(
    settings: Settings, keys: ExchangeKeys, cast: Cast, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await post_day1(sessions, cast)
    await asyncio.sleep(0.002)
    calendar = SteppedCalendar(DAY1, utcnow(), HOUR)
    later = calendar.cutoff_at(DAY1 + dt.timedelta(days=2)) + dt.timedelta(minutes=1)
    engines = [create_engine(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(
                settle_due(
                    session_maker(engine),
                    settings=settings,
                    keys=keys,
                    calendar=calendar,
                    now=later,
                )
                for engine in engines
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    settled = sorted(batch.business_date for result in results for batch in result)
    assert settled == [DAY1 + dt.timedelta(days=k) for k in range(3)]
    async with sessions() as session:
        assert await _count(session, "SELECT count(*) FROM settlement_batch") == 3
        assert named_positions(cast, (await get_batch(session, DAY1)).positions) == DAY1_POSITIONS


async def test_two_cli_processes_at_a_cutoff_make_one_batch(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    cast: Cast,
    tmp_path: Path,
) -> None:
    # A business day that ends two to three seconds from now, in the real calendar.
    cutoff = (utcnow() + dt.timedelta(seconds=3)).replace(microsecond=0)
    calendar = BusinessCalendar(ZoneInfo("UTC"), parse_cutoff(cutoff.strftime("%H:%M:%S")))
    business_date = calendar.business_date_of(utcnow())
    assert calendar.cutoff_at(business_date) == cutoff
    postings = await post_day1(sessions, cast)
    assert utcnow() < cutoff
    await _sleep_until(cutoff + dt.timedelta(seconds=0.05))

    env = {
        **_env(settings, tmp_path),
        "EXCHANGE_SETTLEMENT_CUTOFF": cutoff.strftime("%H:%M:%S"),
        "EXCHANGE_SETTLEMENT_GRACE_SECONDS": "0",
    }
    run = "import sys; from settlement.cli import settlement_group; settlement_group(sys.argv[1:])"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            run,
            "run",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), timeout=90) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err.decode() for _, err in outputs]
    printed = [json.loads(out) for out, _ in outputs]
    assert sorted(len(batches) for batches in printed) == [0, 1]
    (batch,) = [b for batches in printed for b in batches]
    assert (batch["business_date"], batch["postings"]) == (business_date.isoformat(), postings)
    async with sessions() as session:
        assert await _count(session, "SELECT count(*) FROM settlement_batch") == 1
        assert await _count(session, f"SELECT count(*) FROM ({SETTLED}) e") == postings
        view = await get_batch(session, business_date)
    assert named_positions(cast, view.positions) == DAY1_POSITIONS


def _env(settings: Settings, data_dir: Path) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        **os.environ,
        "EXCHANGE_DATABASE_URL": settings.database_url,
        "EXCHANGE_DATA_DIR": str(data_dir),
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_SCHEDULER": "0",
        "EXCHANGE_SETTLEMENT_CURRENCY": "EUR",
    }
