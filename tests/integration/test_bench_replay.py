"""wrk replaying pre-signed requests (``bench.replay``, ``bench/wrk_replay.lua``) does the work
it counts: each request of the file is sent once and posts once, and a refused request is
counted with the service's answer, never hidden."""

from __future__ import annotations

import itertools
import os
import shutil
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from bench import replay
from bench.pg import drop_database, recreate_database
from bench.scenarios import build_api_world
from bench.service import ServiceProcess

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]


async def _transactions(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ledger_transaction"))
    finally:
        await conn.close()


async def test_each_presigned_request_posts_once_and_refusals_are_counted(
    postgres_template: str | None, tmp_path: Path
) -> None:
    if postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")
    name = f"exchange_bench_replay_t_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = await recreate_database(name)
    try:
        world = await build_api_world(url, tmp_path, brands=2, members=20)
        service = ServiceProcess(url, tmp_path, workers=1, extra_env={"EXCHANGE_AUTO_MIGRATE": "0"})
        service.start(timeout=60)
        try:
            before = await _transactions(url)
            # wrk runs its whole -d even when the file ends sooner: 5 s leave a loaded machine
            # time to answer all 50.
            posted = replay.replay(
                "a", service.base_url, replay.ledger_mix(world, [0, 1], seed=5), count=50,
                clients=4, seconds=5, workdir=tmp_path,
            )  # fmt: skip
            assert posted.loaded == posted.sent == 50
            assert posted.ok == 50, posted
            assert posted.non_2xx == 0 and posted.errors == 0, posted.sample_body
            assert posted.exhausted  # the file, not the time, ended it
            assert await _transactions(url) - before == 50

            # Signed ten minutes ago: outside the server's window, each one refused.
            stale = (
                replay.signed(
                    world.brands[0], "POST", "/v1/issuances",
                    {"member_ref": world.member_refs[0], "points": 100}, int(time.time()) - 600,
                )
                for _ in itertools.count()
            )  # fmt: skip
            refused = replay.replay(
                "stale", service.base_url, stale, count=5, clients=2, seconds=2,
                workdir=tmp_path,
            )  # fmt: skip
            assert refused.ok == 0 and refused.non_2xx == 5, refused
            assert refused.sample_status == 401 and refused.sample_body, refused
            assert await _transactions(url) - before == 50
        finally:
            service.stop()
    finally:
        await drop_database(name)
