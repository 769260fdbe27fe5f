"""Races through group commit, over HTTP, against two service processes on PostgreSQL: each
process gathers its own groups, and the groups of the two meet on the same rows."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from bench.pg import drop_database, recreate_database
from bench.scenarios import SEED_POINTS, ApiWorld, Brand, build_api_world
from bench.service import ServiceProcess
from partners.client import AsyncExchangeClient, ProblemError

pytestmark = pytest.mark.postgres_only

PROBLEMS = "https://exchange.example/problems/"


@pytest.fixture
async def served(
    postgres_template: str | None, tmp_path: Path
) -> AsyncIterator[tuple[ApiWorld, str]]:
    if postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")
    name = f"exchange_races_t_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = await recreate_database(name)
    try:
        world = await build_api_world(url, tmp_path, brands=2, members=4)
        service = ServiceProcess(url, tmp_path, workers=2, extra_env={"EXCHANGE_AUTO_MIGRATE": "0"})
        service.start(timeout=60)
        try:
            yield world, service.base_url
        finally:
            service.stop()
    finally:
        await drop_database(name)


def _client(base_url: str, brand: Brand) -> AsyncExchangeClient:
    return AsyncExchangeClient(
        base_url, key_id=brand.key_id, alg="ed25519", key=brand.private_key, timeout=60.0
    )


async def _outcome(call: Awaitable[object]) -> str:
    try:
        await call
    except ProblemError as error:
        return error.type.removeprefix(PROBLEMS)
    return "posted"


async def test_two_hundred_redemptions_of_one_point_against_a_hundred(
    served: tuple[ApiWorld, str],
) -> None:
    world, base_url = served
    ref = world.member_refs[0]
    async with _client(base_url, world.brands[0]) as client:
        await client.redeem(ref, SEED_POINTS - 100)
        outcomes = await asyncio.gather(*(_outcome(client.redeem(ref, 1)) for _ in range(200)))
        assert outcomes.count("posted") == 100
        assert outcomes.count("insufficient-points") == 100
        assert (await client.member(ref)).balance == 0


async def test_opposite_transfers_and_conversions_leave_exact_balances(
    served: tuple[ApiWorld, str],
) -> None:
    """Members transfer back and forth and convert between the two brands both ways at once:
    nothing deadlocks, every request posts, and the balances are what the posted amounts say."""
    world, base_url = served
    one, two = world.brands
    a, b = world.member_refs[:2]
    async with _client(base_url, one) as first, _client(base_url, two) as second:
        calls = []
        for _ in range(30):
            calls.append(_outcome(first.transfer(a, b, 7)))
            calls.append(_outcome(first.transfer(b, a, 5)))
            calls.append(_outcome(first.convert(a, two.currency, a, 400)))
            calls.append(_outcome(second.convert(a, one.currency, a, 800)))
        outcomes = await asyncio.gather(*calls)
        assert set(outcomes) == {"posted"}, outcomes
        # The rate is 4 -> 3 with a 1 % fee: 400 gives floor((400 - 4) * 3 / 4) = 297 and
        # 800 gives floor((800 - 8) * 3 / 4) = 594.
        assert (await first.member(a)).balance == SEED_POINTS + 30 * (-7 + 5 - 400 + 594)
        assert (await first.member(b)).balance == SEED_POINTS + 30 * (7 - 5)
        assert (await second.member(a)).balance == SEED_POINTS + 30 * (297 - 800)
