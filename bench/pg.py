"""PostgreSQL helpers for the benchmarks: scratch databases and the pgbench reference."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from dataclasses import dataclass

import asyncpg

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUN_TAG = str(os.getpid())
"""In the scratch databases' names, so that two runs on one server (two worktrees) never drop
each other's database."""


def scratch_name(kind: str) -> str:
    return f"exchange_bench_{kind}_{RUN_TAG}"


def database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def recreate_database(name: str) -> str:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(name)


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True)
class PgbenchResult:
    clients: int
    seconds: int
    tps: float
    latency_ms: float


def run_pgbench(clients: int, seconds: int, scale: int = 10) -> PgbenchResult:
    """TPC-B (pgbench's default script) on a scratch database of the same server."""
    name = scratch_name("pgbench")
    asyncio.run(recreate_database(name))
    url = database_url(name)
    try:
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(scale), url],
            check=True,
            capture_output=True,
        )
        out = subprocess.run(
            [
                "pgbench",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(seconds),
                "-n",
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        asyncio.run(drop_database(name))
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))  # type: ignore[union-attr]
    return PgbenchResult(clients, seconds, tps, latency)
