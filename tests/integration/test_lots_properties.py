"""Random sequences of operations and expiry runs, against a real database: afterwards every
member's open lots sum to its balance, no lot is negative or above its points, the points
expiries took from lots are the breakage accounts' balances, and ``ledger verify`` agrees.

Each example gets a brand of its own (a fresh currency) and two members on the test's database;
the policy changes between credits (months, quarters, activity, never), and expiry runs cut at
a random number of months ahead, so lots expire in every order."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.db import create_engine, session_maker
from exchange.errors import DomainError
from exchange.ledger import holds, operations, reversal
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.lot_models import Lot
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account
from exchange.ledger.policies import add_months, set_policy
from exchange.ledger.verify import verify_ledger
from exchange.settings import Settings
from partners.service import create_partner

_brands = itertools.count()
MEMBERS = ("ann", "ben")

policies = st.sampled_from(
    [
        ("months", 1),
        ("months", 3),
        ("quarters", 1),
        ("quarters", 2),
        ("activity", 2),
        ("never", None),
    ]
)
points = st.integers(min_value=1, max_value=500)
who = st.sampled_from(MEMBERS)
operation = st.one_of(
    st.tuples(st.just("issue"), who, points, policies),
    st.tuples(st.just("redeem"), who, points),
    st.tuples(st.just("transfer"), who, points),
    st.tuples(st.just("hold"), who, points),
    st.tuples(st.just("reverse"), st.integers(0, 20), points),
    st.tuples(st.just("expire"), st.integers(0, 4)),
)


async def _apply(
    sessions: async_sessionmaker[AsyncSession], brand: Any, step: tuple[Any, ...], posted: list[Any]
) -> None:
    kind = step[0]
    if kind == "expire":
        await expire_lots(sessions, add_months(utcnow(), step[1]), notice_days=0)
        return
    async with sessions() as s, s.begin():
        if kind == "issue":
            await set_policy(s, brand.id, *step[3])
        try:
            async with s.begin_nested():
                if kind == "issue":
                    posted.append(await operations.issue(s, brand, step[1], step[2]))
                elif kind == "redeem":
                    posted.append(await operations.redeem(s, brand, step[1], step[2]))
                elif kind == "transfer":
                    other = MEMBERS[1 - MEMBERS.index(step[1])]
                    posted.append(await operations.transfer(s, brand, step[1], other, step[2]))
                elif kind == "hold":
                    await holds.place_hold(s, brand, step[1], step[2], expires_in=3600)
                elif posted:
                    original = posted[step[1] % len(posted)]
                    await reversal.reverse(s, brand, original.id, step[2])
        except DomainError:
            pass


async def _check(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s:
        open_lots = (
            select(Lot.account_id, func.sum(Lot.remaining).label("total"))
            .where(Lot.remaining > 0)
            .group_by(Lot.account_id)
            .subquery()
        )
        mismatched = (
            await s.execute(
                select(Account.id, Account.balance, open_lots.c.total)
                .outerjoin(open_lots, open_lots.c.account_id == Account.id)
                .where(
                    Account.kind == "member",
                    Account.balance != func.coalesce(open_lots.c.total, 0),
                )
            )
        ).all()
        assert mismatched == []
        assert await s.scalar(select(func.count()).where(Lot.remaining < 0)) == 0
        report = await verify_ledger(s)
    assert report.ok, report.faults


async def _example(settings: Settings, steps: list[tuple[Any, ...]]) -> None:
    engine = create_engine(settings)
    sessions = session_maker(engine)
    try:
        async with sessions() as s, s.begin():
            number = next(_brands)
            brand = await create_partner(
                s,
                kind="brand",
                name=f"Brand {number}",
                currency=f"L{number}",
                settlement_currency=settings.settlement_currency,
                shards=2,
            )
            for ref in MEMBERS:
                await enrol_member(s, brand, ref)
        posted: list[Any] = []
        for step in steps:
            await _apply(sessions, brand, step, posted)
            await _check(sessions)
    finally:
        await engine.dispose()


def test_open_lots_always_sum_to_the_balance(settings: Settings) -> None:
    @hypothesis_settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(operation, min_size=1, max_size=10))
    def run(steps: list[tuple[Any, ...]]) -> None:
        asyncio.run(_example(settings, steps))

    run()
