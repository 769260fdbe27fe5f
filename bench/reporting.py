"""``python -m bench.reporting``: the operator's reports on a coalition of 20 brands and a
million members, on PostgreSQL.

The world is written by set-based SQL inside PostgreSQL (``generate_series`` and window
functions, a few statements for millions of rows), not through the engine: through the API or
the engine's batch path a million members' history would take hours on this machine. What is
written has the shapes the reports read: real partners and their accounts (through the
services), a member and an account per member, transactions of each kind with their postings
balanced per ledger (earns and redemptions against the brand's issuance shards, conversions on
both brands' ledgers, donations with their money legs to the charity), per-account sequence
numbers and running balances, account heads to match, and the indexes the migrations create;
rows are written in time order, as the engine writes them (a day's postings lie together).
What it leaves out the reports never read: the posting hashes are placeholders (so ``ledger
verify`` would refuse this ledger) and triggers are off while loading (``session_replication_role
= replica``), the rows being balanced by construction.

The history: 120 closed business days (UTC, cutoff midnight) and today. Members are skewed: brand
0 has 300 000, the 19 others about 36 800 each. Each member earns 1 to 4 times in the first half
of the history; 30 % redeem, 5 % convert to another brand, 2 % donate, in the second half; and
20 000 members earn today (read live). Then the rollup closes the 120 days (timed), and
``overview()`` and ``programme_metrics()`` are timed, each several times.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.pg import drop_database, recreate_database, scratch_name
from bench.synth import create_partners
from exchange.base import utcnow
from exchange.db import create_engine, session_maker
from exchange.reporting import service
from exchange.reporting.rollup import close_due_days
from exchange.settings import get_settings
from settlement.calendar import BusinessCalendar

HISTORY_DAYS = 120
MEMBERS = 1_000_000
BIG_BRAND = 300_000
TODAY_EARNS = 20_000
SHARDS = 8

_WORLD = [
    """CREATE TEMP TABLE b AS SELECT (row_number() OVER (ORDER BY currency) - 1)::int AS i,
        id, currency, shards FROM partner WHERE kind = 'brand'""",
    """INSERT INTO point_value (id, partner_id, micros_per_point, effective_at, created_at)
        SELECT gen_random_uuid(), id, 5000 + 500 * i, now() - interval '1 year', now() FROM b""",
    f"""CREATE TEMP TABLE m AS SELECT n,
        (CASE WHEN n < {BIG_BRAND} THEN 0 ELSE 1 + n % 19 END)::int AS bi,
        gen_random_uuid() AS member_id FROM generate_series(0, {MEMBERS - 1}) AS n""",
    """INSERT INTO member (id, partner_id, member_ref, created_at)
        SELECT m.member_id, b.id, 'm' || m.n, now() FROM m JOIN b ON b.i = m.bi""",
    """INSERT INTO account (ledger, kind, partner_id, member_id, shard, balance, held, seq,
        head_hash, created_at)
        SELECT b.currency, 'member', b.id, m.member_id, 0, 0, 0, 0, '\\x00', now()
        FROM m JOIN b ON b.i = m.bi""",
    """CREATE TEMP TABLE ma AS SELECT m.n, m.bi, b.id AS brand_id, b.currency, a.id AS account_id
        FROM m JOIN b ON b.i = m.bi JOIN account a ON a.member_id = m.member_id""",
    "CREATE INDEX ON ma (n)",
    """CREATE TEMP TABLE pool AS SELECT partner_id, kind, shard, id AS account_id, ledger
        FROM account WHERE member_id IS NULL""",
    # Events: (transaction, kind, member, points, when, destination member for conversions).
    f"""CREATE TEMP TABLE ev AS
        SELECT gen_random_uuid() AS tx_id, 'issue'::text AS kind, n, NULL::int AS to_n,
            (100 + floor(random() * 900))::bigint AS points,
            :start + floor(random() * {HISTORY_DAYS // 2}) * interval '1 day'
                + random() * interval '1 day' AS created_at
        FROM generate_series(0, {MEMBERS - 1}) AS n, generate_series(1, 4) AS k
        WHERE k <= 1 + n % 4
        UNION ALL
        SELECT gen_random_uuid(), 'redeem', n, NULL, 50, :middle
            + floor(random() * {HISTORY_DAYS // 2}) * interval '1 day' + random() * interval '1 day'
        FROM generate_series(0, {MEMBERS - 1}) AS n WHERE n % 10 < 3
        UNION ALL
        SELECT gen_random_uuid(), 'convert', n,
            CASE WHEN n < {BIG_BRAND} THEN n + {BIG_BRAND} ELSE n - {BIG_BRAND} END, 30, :middle
            + floor(random() * {HISTORY_DAYS // 2}) * interval '1 day' + random() * interval '1 day'
        FROM generate_series(0, {MEMBERS - 1}) AS n WHERE n % 20 = 0
        UNION ALL
        SELECT gen_random_uuid(), 'donate', n, NULL, 20, :middle
            + floor(random() * {HISTORY_DAYS // 2}) * interval '1 day' + random() * interval '1 day'
        FROM generate_series(0, {MEMBERS - 1}) AS n WHERE n % 50 = 1
        UNION ALL
        SELECT gen_random_uuid(), 'issue', n, NULL, 100, :today + random() * (now() - :today)
        FROM generate_series(0, {MEMBERS - 1}) AS n WHERE n % 50 = 2""",
    """INSERT INTO ledger_transaction (id, kind, partner_id, points, created_at)
        SELECT ev.tx_id, ev.kind, ma.brand_id, ev.points, ev.created_at
        FROM ev JOIN ma ON ma.n = ev.n ORDER BY ev.created_at""",
    # Legs: the member's side and its brand's issuance shard (member account id % shards).
    """CREATE TEMP TABLE leg AS
        SELECT ev.tx_id, ev.created_at, ma.account_id, ma.currency AS ledger,
            CASE WHEN ev.kind = 'issue' THEN ev.points ELSE -ev.points END AS amount
        FROM ev JOIN ma ON ma.n = ev.n
        UNION ALL
        SELECT ev.tx_id, ev.created_at, pool.account_id, ma.currency,
            CASE WHEN ev.kind = 'issue' THEN -ev.points ELSE ev.points END
        FROM ev JOIN ma ON ma.n = ev.n JOIN pool ON pool.partner_id = ma.brand_id
            AND pool.kind = 'issuance' AND pool.shard = ma.account_id % :shards
        UNION ALL
        SELECT ev.tx_id, ev.created_at, side.account_id, side.currency, side.amount
        FROM ev JOIN ma AS dest ON dest.n = ev.to_n
        CROSS JOIN LATERAL (
            SELECT dest.account_id, dest.currency, 22::bigint AS amount
            UNION ALL
            SELECT pool.account_id, dest.currency, -22 FROM pool
            WHERE pool.partner_id = dest.brand_id AND pool.kind = 'issuance'
                AND pool.shard = dest.account_id % :shards
        ) AS side
        WHERE ev.kind = 'convert'
        UNION ALL
        SELECT ev.tx_id, ev.created_at, pool.account_id, pool.ledger,
            CASE WHEN pool.partner_id = ma.brand_id THEN -1 ELSE 1 END
                * ev.points * (5000 + 500 * ma.bi)
        FROM ev JOIN ma ON ma.n = ev.n JOIN pool ON pool.kind = 'settlement' AND pool.shard = 0
            AND (pool.partner_id = ma.brand_id
                 OR pool.partner_id = (SELECT id FROM partner WHERE kind = 'charity'))
        WHERE ev.kind = 'donate'""",
    """INSERT INTO posting (transaction_id, account_id, ledger, seq, amount, balance_after,
        prev_hash, hash, counterparty_account_id, created_at)
        SELECT tx_id, account_id, ledger, row_number() OVER w, amount, sum(amount) OVER w,
            '\\x00', '\\x00', account_id, created_at
        FROM leg WINDOW w AS (PARTITION BY account_id ORDER BY created_at, tx_id)
        ORDER BY created_at, tx_id""",
    """UPDATE account SET balance = s.balance, seq = s.n
        FROM (SELECT account_id, sum(amount) AS balance, count(*) AS n FROM leg
              GROUP BY account_id) AS s WHERE account.id = s.account_id""",
    "ANALYZE",
]


async def build_world(url: str, today: dt.date) -> dict[str, float]:
    """The world of the module's note; seconds per step."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    await create_partners(url, 20, SHARDS)
    timings["partners and accounts (services)"] = time.perf_counter() - began
    today_start = dt.datetime.combine(today, dt.time(0), tzinfo=dt.UTC)
    start = today_start - dt.timedelta(days=HISTORY_DAYS)
    middle = start + dt.timedelta(days=HISTORY_DAYS // 2)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET session_replication_role = replica; SET work_mem = '256MB'")
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE bench_clock (start timestamptz, middle timestamptz,"
                " today timestamptz); INSERT INTO bench_clock VALUES"
                f" ('{start.isoformat()}', '{middle.isoformat()}', '{today_start.isoformat()}')"
            )
            for statement in _WORLD:
                began = time.perf_counter()
                sql = (
                    statement.replace(":start", "(SELECT start FROM bench_clock)")
                    .replace(":middle", "(SELECT middle FROM bench_clock)")
                    .replace(":today", "(SELECT today FROM bench_clock)")
                    .replace(":shards", str(SHARDS))
                )
                await conn.execute(sql)
                label = " ".join(statement.split()[:3])
                timings[label] = timings.get(label, 0.0) + time.perf_counter() - began
        began = time.perf_counter()
        await conn.execute("ANALYZE")
        timings["ANALYZE"] = time.perf_counter() - began
    finally:
        await conn.close()
    return timings


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    """Best and median seconds over ``runs`` calls."""
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - began)
    return min(seconds), statistics.median(seconds)


async def main(runs: int, keep: bool) -> None:
    name = scratch_name("reporting")
    url = await recreate_database(name)
    today = utcnow().date()
    calendar = BusinessCalendar(dt.UTC, dt.time(0))  # type: ignore[arg-type]
    settings = replace(get_settings(), database_url=url, auto_migrate=False)
    try:
        began = time.perf_counter()
        steps = await build_world(url, today)
        print(f"world built in {time.perf_counter() - began:.0f} s")
        for step, seconds in steps.items():
            print(f"  {seconds:8.1f} s  {step}")
        engine = create_engine(settings)
        sessions = session_maker(engine)
        async with sessions() as session:
            counts = (
                await session.execute(
                    text(
                        "SELECT (SELECT count(*) FROM member), (SELECT count(*) FROM"
                        " ledger_transaction), (SELECT count(*) FROM posting)"
                    )
                )
            ).one()
        print(f"members {counts[0]:,}, transactions {counts[1]:,}, postings {counts[2]:,}")
        began = time.perf_counter()
        closed = await close_due_days(sessions, calendar)
        rollup = time.perf_counter() - began
        print(
            f"rollup: {len(closed)} days closed in {rollup:.1f} s"
            f" ({rollup / len(closed):.2f} s a day)"
        )
        conn = await asyncpg.connect(url)
        await conn.execute("ANALYZE")
        await conn.close()
        async with AsyncSession(engine) as session:
            brands = {
                row.currency: row.id
                for row in await session.execute(
                    text("SELECT id, currency FROM partner WHERE kind = 'brand'")
                )
            }
        big, small = brands["B000"], brands["B007"]

        async def overview() -> Any:
            async with sessions() as session:
                return await service.overview(session, today=today, days=30, calendar=calendar)

        def metrics(brand: Any) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                async with sessions() as session:
                    return await service.programme_metrics(
                        session, brand, start=today - dt.timedelta(days=89), end=today,
                        calendar=calendar,
                    )  # fmt: skip

            return call

        for label, call in (
            ("overview(days=30), 20 brands", overview),
            ("programme_metrics, 90 days, brand of 300 000 members", metrics(big)),
            ("programme_metrics, 90 days, brand of 36 800 members", metrics(small)),
        ):
            best, median = await timed(call, runs)
            print(
                f"{label}: best {best * 1000:.0f} ms, median {median * 1000:.0f} ms ({runs} runs)"
            )
        shown = await metrics(big)()
        print(
            f"  B000: active 30/90 days {shown.active_30_days:,}/{shown.active_90_days:,},"
            f" earned {shown.earned:,}, cohorts {len(shown.cohorts)}"
        )
        await engine.dispose()
    finally:
        if not keep:
            await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls of each report")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.keep))
