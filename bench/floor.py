"""The floor under the API scenarios: the least a request costs on this stack, measured in the
same run, the same way.

A Litestar app with one route, ``POST /transfer``, that moves points between two of a thousand
rows through raw asyncpg: two ``UPDATE ... RETURNING`` and an ``INSERT`` of history in one
transaction, the write half of pgbench's TPC-B. It runs under uvicorn with the service's worker
count, on a scratch database of the same server, and is driven by the same closed loop with the
same clients and seconds, through plain ``httpx`` (the transport of the partner SDK). There is
no signature, idempotency, ledger or JSON schema beyond three integers: whatever the exchange does
on top of an HTTP request and a short transaction, it cannot go faster than this. Its ratio to
pgbench is the ceiling of any API scenario's ratio on the machine.

Written by hand, and kept apart from the exchange on purpose: it is the reference, not a
product (``python -m bench --scenarios floor``). ``python -m bench`` drives it twice: with wrk
replaying the same request (bench/replay.py), and with httpx as here.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import msgspec
from litestar import Litestar, get, post
from litestar.datastructures import State

from bench.load import CpuMeter, LoadResult, drive
from bench.pg import drop_database, recreate_database
from bench.service import ServiceProcess

DATABASE_ENV = "BENCH_FLOOR_DATABASE_URL"
ROWS = 1_000
OPENING_BALANCE = 10**12

SCHEMA = f"""
CREATE TABLE floor_account (id integer PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE floor_history (
    id bigserial PRIMARY KEY, source integer NOT NULL, target integer NOT NULL,
    points bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO floor_account SELECT g, {OPENING_BALANCE} FROM generate_series(1, {ROWS}) g;
"""


class Transfer(msgspec.Struct, forbid_unknown_fields=True):
    source: int
    target: int
    points: int


@post("/transfer")
async def transfer(data: Transfer, state: State) -> dict[str, int]:
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as conn, conn.transaction():
        source = await conn.fetchval(
            "UPDATE floor_account SET balance = balance - $2 WHERE id = $1 RETURNING balance",
            data.source,
            data.points,
        )
        target = await conn.fetchval(
            "UPDATE floor_account SET balance = balance + $2 WHERE id = $1 RETURNING balance",
            data.target,
            data.points,
        )
        await conn.execute(
            "INSERT INTO floor_history (source, target, points) VALUES ($1, $2, $3)",
            data.source,
            data.target,
            data.points,
        )
    return {"source": source, "target": target}


@get("/ready")
async def ready() -> str:
    return "ok"


async def _open_pool(app: Litestar) -> None:
    app.state.pool = await asyncpg.create_pool(os.environ[DATABASE_ENV], min_size=2, max_size=20)


async def _close_pool(app: Litestar) -> None:
    await app.state.pool.close()


def create_app() -> Litestar:
    return Litestar([transfer, ready], on_startup=[_open_pool], on_shutdown=[_close_pool])


@contextlib.asynccontextmanager
async def serve_floor(
    *, workers: int, data_dir: Path, database: str = "exchange_bench_floor"
) -> AsyncIterator[tuple[ServiceProcess, str]]:
    """The floor app under uvicorn on a scratch database (made here, dropped after), and that
    database's URL. On the way out, the balances must still sum to what they opened with."""
    url = await recreate_database(database)
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()
        service = ServiceProcess(
            url, data_dir, workers=workers, app="bench.floor:create_app",
            extra_env={DATABASE_ENV: url},
        )  # fmt: skip
        service.start(timeout=60)
        try:
            yield service, url
        finally:
            service.stop()
        conn = await asyncpg.connect(url)
        try:
            total = await conn.fetchval("SELECT sum(balance) FROM floor_account")
        finally:
            await conn.close()
        if total != OPENING_BALANCE * ROWS:
            raise RuntimeError(f"floor: the balances no longer sum to the opening ({total})")
    finally:
        await drop_database(database)


async def points_moved(url: str) -> int:
    """Points moved so far: one per transfer done."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(points), 0) FROM floor_history"))
    finally:
        await conn.close()


def floor_operation(client: httpx.AsyncClient) -> Callable[[int, int], Awaitable[int]]:
    """One transfer of a point between two random rows, through plain httpx (``drive``'s
    operation)."""
    rngs: dict[int, random.Random] = {}

    async def operation(worker: int, i: int) -> int:
        rng = rngs.setdefault(worker, random.Random(worker))
        source, target = rng.sample(range(1, ROWS + 1), 2)
        response = await client.post(
            "/transfer", json={"source": source, "target": target, "points": 1}
        )
        if response.status_code != 201:
            raise RuntimeError(f"floor: {response.status_code} {response.text}")
        return 1

    return operation


async def run_floor(
    *,
    clients: int,
    seconds: float,
    warmup: float,
    workers: int,
    data_dir: Path,
    database: str = "exchange_bench_floor",
) -> tuple[LoadResult, dict[str, float], int]:
    """Serve the floor app on a scratch database (made and dropped here), drive it through
    httpx, and return the load, the CPU split and the points moved as the database counts
    them: one per transfer answered, a check that the work was done."""
    async with serve_floor(workers=workers, data_dir=data_dir, database=database) as (
        service,
        url,
    ):
        assert service.process is not None
        meter = CpuMeter(service_pgid=service.process.pid, databases={database})
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30.0) as client:
            meter.start()  # as for the API scenarios: the warmup is in, as a rate
            result = await drive(
                "floor", floor_operation(client), concurrency=clients, seconds=seconds,
                warmup=warmup,
            )  # fmt: skip
            cpu = meter.stop()
        moved = await points_moved(url)
    return result, cpu, moved
