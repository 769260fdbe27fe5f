"""No double spend, no deadlock, no duplicate member, under real concurrency on PostgreSQL.

Every operation runs in its own session and database transaction, all started at once with
``asyncio.gather``; the engine's pool (20 + 20 connections) lets up to 40 of them hold a
connection at the same time, so they genuinely race for the same rows."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.errors import DomainError, InsufficientPoints, ReversalExceedsOriginal
from exchange.ledger.holds import HoldView, place_hold
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Member
from exchange.ledger.operations import issue, redeem, transfer
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance, member_history
from exchange.ledger.reversal import reverse
from tests.integration.ledger_checks import assert_ledger_whole, assert_outstanding

pytestmark = pytest.mark.postgres_only

Sessions = async_sessionmaker[AsyncSession]


async def race(
    sessions: Sessions, calls: list[Callable[[AsyncSession], Awaitable[Any]]]
) -> list[Any]:
    """Run every call in a transaction of its own, all at once; domain refusals are outcomes,
    anything else (a deadlock, a serialisation failure, a pool timeout) fails the test."""

    async def one(call: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        try:
            async with sessions() as s, s.begin():
                return await call(s)
        except DomainError as refusal:
            return refusal

    return await asyncio.gather(*(one(call) for call in calls))


async def funded(sessions: Sessions, brand: PartnerInfo, **members: int) -> None:
    async with sessions() as s, s.begin():
        for ref, points in members.items():
            await enrol_member(s, brand, ref)
            if points:
                await issue(s, brand, ref, points)


async def points_of(sessions: Sessions, brand: PartnerInfo, ref: str) -> tuple[int, int, int]:
    async with sessions() as s:
        balance = await member_balance(s, brand, ref)
    return balance.balance, balance.held, balance.available


def tally(outcomes: list[Any]) -> Counter[str]:
    return Counter(type(o).__name__ if isinstance(o, DomainError) else "ok" for o in outcomes)


async def test_two_hundred_redemptions_of_one_point_against_a_hundred(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice has 100 SKY; 200 redemptions of 1 arrive at once: exactly 100 go through."""
    await funded(sessions, sky, alice=100)
    outcomes = await race(sessions, [lambda s: redeem(s, sky, "alice", 1) for _ in range(200)])
    assert tally(outcomes) == {"ok": 100, "InsufficientPoints": 100}
    for refusal in outcomes:
        if isinstance(refusal, InsufficientPoints):
            assert refusal.extra == {"member_ref": "alice", "available": 0, "requested": 1}
    assert await points_of(sessions, sky, "alice") == (0, 0, 0)
    async with sessions() as s:
        await assert_outstanding(s, sky, 0)
        await assert_ledger_whole(s)
        history, _ = await member_history(s, sky, "alice", limit=500)
    # seq 1 is the issue; then 100 redemptions, each one point lower, with no gap or repeat.
    assert [(h.seq, h.balance_after) for h in reversed(history)] == [(1, 100)] + [
        (seq, 101 - seq) for seq in range(2, 102)
    ]


async def test_holds_and_redemptions_racing_never_overdraw(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice has 100 SKY; 100 holds of 1 and 100 redemptions of 1 arrive at once. Whatever the
    order, exactly 100 of them fit: balance - held ends at 0."""
    await funded(sessions, sky, alice=100)
    calls: list[Callable[[AsyncSession], Awaitable[Any]]] = []
    for _ in range(100):
        calls.append(lambda s: place_hold(s, sky, "alice", 1, expires_in=3600))
        calls.append(lambda s: redeem(s, sky, "alice", 1))
    outcomes = await race(sessions, calls)
    counts = tally(outcomes)
    assert counts == {"ok": 100, "InsufficientPoints": 100}
    held = sum(1 for o in outcomes if isinstance(o, HoldView))
    assert await points_of(sessions, sky, "alice") == (held, held, 0)
    async with sessions() as s:
        await assert_ledger_whole(s)


async def test_opposite_transfers_do_not_deadlock(sessions: Sessions, sky: PartnerInfo) -> None:
    """alice and bob have 1 000 SKY each; 100 transfers of 3 from alice to bob race 100 of 2 from
    bob to alice. Every one goes through (no deadlock, no refusal):
    alice 1 000 - 300 + 200 = 900, bob 1 000 + 300 - 200 = 1 100."""
    await funded(sessions, sky, alice=1000, bob=1000)
    calls: list[Callable[[AsyncSession], Awaitable[Any]]] = []
    for _ in range(100):
        calls.append(lambda s: transfer(s, sky, "alice", "bob", 3))
        calls.append(lambda s: transfer(s, sky, "bob", "alice", 2))
    outcomes = await race(sessions, calls)
    assert tally(outcomes) == {"ok": 200}
    assert await points_of(sessions, sky, "alice") == (900, 0, 900)
    assert await points_of(sessions, sky, "bob") == (1100, 0, 1100)
    async with sessions() as s:
        await assert_outstanding(s, sky, 2000)
        await assert_ledger_whole(s)


async def test_concurrent_enrolments_make_one_member(sessions: Sessions, sky: PartnerInfo) -> None:
    outcomes = await race(sessions, [lambda s: enrol_member(s, sky, "carol") for _ in range(30)])
    assert tally(outcomes) == {"ok": 30}
    created = [was_created for _, was_created in outcomes]
    assert created.count(True) == 1
    assert len({member for member, _ in outcomes}) == 1
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Member)) == 1
        await assert_ledger_whole(s)


async def test_concurrent_reversals_are_capped_at_the_original(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """A 100-point issue, and 20 reversals of 10 at once: 10 of them fit, the rest are refused,
    and alice ends with nothing."""
    await funded(sessions, sky, alice=0)
    async with sessions() as s, s.begin():
        issued = await issue(s, sky, "alice", 100)
    outcomes = await race(sessions, [lambda s: reverse(s, sky, issued.id, 10) for _ in range(20)])
    assert tally(outcomes) == {"ok": 10, "ReversalExceedsOriginal": 10}
    for refusal in outcomes:
        if isinstance(refusal, ReversalExceedsOriginal):
            assert refusal.extra["remaining"] == 0
    assert await points_of(sessions, sky, "alice") == (0, 0, 0)
    async with sessions() as s:
        await assert_outstanding(s, sky, 0)
        await assert_ledger_whole(s)
