"""The transaction log's benchmark: appending leaves, and proofs at ten million leaves.

    .venv/bin/python -m bench.transparency [--append 1000000] [--size 10000000] [--proofs 2000]

On a scratch PostgreSQL database (``exchange_bench_log_<pid>``, dropped after) holding only the
log's tables: ``--append`` leaves go through ``store.append_leaves``, the sequencer's own write
(entries by COPY, the tiles they change), in runs of 20 000 as the sequencer takes them; then
the tiles are filled on to ``--size`` leaves (tiles only: proofs read nothing else), and
``--proofs`` inclusion and as many consistency proofs are read, each in its own transaction,
from random indexes and sizes. Prints leaves/s and each proof's p50 and p99, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid

from sqlalchemy import insert, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.pg import drop_database, recreate_database, scratch_name
from exchange.transparency import store
from exchange.transparency.models import LogEntry, LogTile
from exchange.transparency.tiles import append_tiles, edge_tiles

RUN = 20_000


async def append(sessions: async_sessionmaker[AsyncSession], leaves: int) -> float:
    """Leaves per second through the sequencer's write path."""
    size, started = 0, time.perf_counter()
    while size < leaves:
        n = min(RUN, leaves - size)
        hashes = [os.urandom(32) for _ in range(n)]
        ids = [uuid.uuid4() for _ in range(n)]
        async with sessions() as session, session.begin():
            size = await store.append_leaves(session, size, ids, hashes)
    return leaves / (time.perf_counter() - started)


async def fill(sessions: async_sessionmaker[AsyncSession], start: int, size: int) -> None:
    """Tiles for leaves ``start`` to ``size``, computed in memory as the sequencer would."""
    async with sessions() as session:
        edges = edge_tiles(start)
        current = await store.read_tiles(session, [(lvl, i) for lvl, (i, _) in edges.items()])
    tiles = {lvl: current[(lvl, i)] for lvl, (i, _) in edges.items()}
    chunk = 1 << 18
    while start < size:
        n = min(chunk, size - start)
        written = append_tiles(start, tiles, [os.urandom(32) for _ in range(n)])
        start += n
        tiles = {
            lvl: written.get((lvl, i), tiles.get(lvl, b""))
            for lvl, (i, _) in edge_tiles(start).items()
        }
        async with sessions() as session, session.begin():
            keys = list(written)
            await session.execute(
                LogTile.__table__.delete().where(  # type: ignore[attr-defined]
                    tuple_(LogTile.level, LogTile.idx).in_(keys)
                )
            )
            await session.execute(
                insert(LogTile),
                [{"level": k[0], "idx": k[1], "hashes": v} for k, v in written.items()],
            )


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def proofs(
    sessions: async_sessionmaker[AsyncSession], size: int, count: int
) -> tuple[list[float], list[float]]:
    inclusion, consistency = [], []
    for _ in range(count):
        index = random.randrange(size)
        started = time.perf_counter()
        async with sessions() as session:
            await store.inclusion_proof(session, index, size)
        inclusion.append(time.perf_counter() - started)
        old = random.randrange(1, size)
        started = time.perf_counter()
        async with sessions() as session:
            await store.consistency_proof(session, old, size)
        consistency.append(time.perf_counter() - started)
    return inclusion, consistency


async def main(args: argparse.Namespace) -> None:
    name = scratch_name("log")
    url = (await recreate_database(name)).replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for table in (LogEntry.__table__, LogTile.__table__):
                await connection.run_sync(table.create)  # type: ignore[attr-defined]
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        rate = await append(sessions, args.append)
        print(f"append: {args.append} leaves at {rate:,.0f} leaves/s")
        started = time.perf_counter()
        await fill(sessions, args.append, args.size)
        print(f"filled tiles to {args.size} leaves in {time.perf_counter() - started:.1f} s")
        await proofs(sessions, args.size, 50)  # warm the connection pool and caches
        inclusion, consistency = await proofs(sessions, args.size, args.proofs)
        for label, samples in (("inclusion", inclusion), ("consistency", consistency)):
            p50, p99 = percentiles(samples)
            print(f"{label} proof at {args.size}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        await engine.dispose()
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.transparency")
    parser.add_argument("--append", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    asyncio.run(main(parser.parse_args()))
