"""Random orders and random sequences of returns, against a real database.

Each example sets the brand's earn rules (1 point per 10 cents, books doubled, a cap now and
then), has a new member buy an order of random lines through the purchase service, and sends
random returns (some for more units than are left, some after the member spent points, some of
a line twice), each in a database transaction of its own, as the API does. After every step:

* an order's points minus its returns' points is never negative, and the returns' points are
  exactly the ``reverse`` transactions of its ``earn`` (nothing recorded by a refused return);
* no line has more units returned than it had;
* the member's balance is the order's points, less what the returns took back and what the
  member redeemed.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.contract.purchases import (
    EarnRate,
    EarnRulesCreate,
    OrderLine,
    PurchaseCreate,
    ReturnCreate,
    ReturnLine,
)
from exchange.db import create_engine
from exchange.errors import DomainError, NothingEarned
from exchange.ledger import operations
from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance
from exchange.purchases import service
from exchange.purchases.rules import set_earn_rules
from exchange.settings import Settings
from tests.conftest import make_partner

_members = itertools.count()

lines_st = st.lists(
    st.builds(
        OrderLine,
        sku=st.just("sku"),
        product_type=st.sampled_from(["apparel", "media"]),
        category=st.sampled_from(["books", "food"]),
        amount_minor=st.integers(0, 100_000),
        quantity=st.integers(1, 5),
    ),
    min_size=1,
    max_size=4,
)
# (line index, units) to return, or ("spend", points) for a redemption in between.
steps_st = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 3), st.integers(1, 6)),
        st.tuples(st.just(-1), st.integers(1, 2_000)),
    ),
    max_size=8,
)


async def _example(
    settings: Settings,
    brand: dict[str, PartnerInfo],
    lines: list[OrderLine],
    cap: int | None,
    steps: list[tuple[int, int]],
) -> None:
    engine = create_engine(settings)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        if "sky" not in brand:
            brand["sky"] = await make_partner(sessions, settings, "brand", "Sky Air", "SKY")
        sky = brand["sky"]
        ref = f"m-{next(_members)}"
        rules = EarnRulesCreate(
            rates=[EarnRate("EUR", 1, 10)],
            category_multipliers_bps={"books": 20_000},
            order_cap=cap,
        )
        async with sessions() as session, session.begin():
            await set_earn_rules(session, sky, rules)
            await enrol_member(session, sky, ref)
        try:
            async with sessions() as session, session.begin():
                view, _ = await service.post_purchase(
                    session, sky, PurchaseCreate(f"o-{uuid.uuid4()}", ref, "EUR", lines)
                )
        except NothingEarned:
            return
        spent = 0
        for index, amount in steps:
            try:
                async with sessions() as session, session.begin():
                    if index < 0:
                        await operations.redeem(session, sky, ref, amount)
                        spent += amount
                    else:
                        number = index % len(lines) + 1
                        await service.post_return(
                            session, sky, view.id, ReturnCreate([ReturnLine(number, amount)])
                        )
            except DomainError:
                pass
            await _check(sessions, sky, ref, view.id, spent)
    finally:
        await engine.dispose()


async def _check(
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
    ref: str,
    purchase_id: uuid.UUID,
    spent: int,
) -> None:
    async with sessions() as session:
        view = await service.purchase_view(session, sky, purchase_id)
        reversed_points = await session.scalar(
            select(func.coalesce(func.sum(LedgerTransaction.points), 0)).where(
                LedgerTransaction.reverses_id == view.transaction_id
            )
        )
        balance = await member_balance(session, sky, ref)
    assert view.points - view.returned_points >= 0
    assert view.returned_points == reversed_points
    assert sum(line.returned_points for line in view.lines) == view.returned_points
    assert all(line.returned_quantity <= line.quantity for line in view.lines)
    assert all(line.returned_points <= line.points for line in view.lines)
    assert balance.balance == view.points - view.returned_points - spent


def test_an_orders_points_less_its_returns_are_never_negative(settings: Settings) -> None:
    brand: dict[str, PartnerInfo] = {}

    @hypothesis_settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(lines=lines_st, cap=st.none() | st.integers(1, 5_000), steps=steps_st)
    def run(lines: list[OrderLine], cap: int | None, steps: list[tuple[int, int]]) -> None:
        asyncio.run(_example(settings, brand, lines, cap, steps))

    run()
