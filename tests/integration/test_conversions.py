"""Conversions on the real ledger: the worked example on three ledgers, its reversal in parts,
properties over random rates, a refusal per bad input, and opposite conversions racing.

Values: SKY 12 000 micros per point (1.2 cents), HTL 8 000 (0.8 cents). Money in micros of EUR.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.conversions import service as conversions
from exchange.errors import (
    BelowMinimum,
    DomainError,
    InsufficientPoints,
    InvalidAmount,
    LimitExceeded,
    MemberNotEnrolled,
    MemberNotFound,
    NotABrand,
    OperatorNotConfigured,
    PointValueNotFound,
    QuoteExpired,
    QuoteMismatch,
    QuoteNotFound,
    QuoteUsed,
    RateNotFound,
    SameBrand,
    UnknownCurrency,
    ZeroOutput,
)
from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.operations import issue, redeem
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance
from exchange.ledger.reversal import reverse
from exchange.ledger.verify import verify_ledger
from exchange.pricing import quotes
from exchange.pricing import service as rates
from exchange.settings import Settings
from tests.conftest import make_partner
from tests.integration.ledger_pages import balances, counts, ledger_sums, postings

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def operator(sessions: Sessions, settings: Settings) -> PartnerInfo:
    return await make_partner(sessions, settings, "operator", "Coalition")


@pytest.fixture
async def priced(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> dict[str, Any]:
    """Values for both brands and a SKY -> HTL rate of 1000:750 with a 1% fee, in force now."""
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        rate = await rates.set_rate(
            s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100, min_points=500
        )
    return {"rate": rate}


@pytest.fixture
async def alice(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> str:
    """Alice: a member of both brands, with 20 000 SKY and no HTL."""
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
        await enrol_member(s, htl, "alice")
        await issue(s, sky, "alice", 20_000)
    return "alice"


async def _transaction(sessions: Sessions, transaction_id: Any) -> Any:
    async with sessions() as s:
        return (
            await s.execute(
                select(LedgerTransaction.__table__).where(
                    LedgerTransaction.__table__.c.id == transaction_id
                )
            )
        ).one()


async def _assert_balanced(sessions: Sessions) -> None:
    async with sessions() as s:
        assert set((await ledger_sums(s)).values()) == {0}
        report = await verify_ledger(s)
        assert report.ok, report.as_dict()


# --- the worked example -------------------------------------------------------------------------


async def test_member_converts_10_000_sky_to_htl_at_1000_to_750_with_1_percent_fee(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    operator: PartnerInfo,
    priced: dict[str, Any],
    alice: str,
) -> None:
    async with sessions() as s:
        before = await balances(s)
    async with sessions() as s, s.begin():
        conversion = await conversions.post_conversion(s, sky, "alice", "HTL", "alice", 10_000)

    # fee = ceil(10 000 * 1%) = 100 SKY; out = floor(9 900 * 750 / 1 000) = 7 425 HTL
    assert (conversion.points, conversion.fee, conversion.out) == (10_000, 100, 7_425)
    # SKY owes HTL 7 425 * 8 000 and the operator 100 * 12 000 micros
    assert conversion.destination_micros == 59_400_000
    assert conversion.operator_fee_micros == 1_200_000
    assert conversion.rate_version_id == priced["rate"].id
    assert conversion.settlement_currency == "EUR"
    async with sessions() as s:
        assert await postings(s, conversion.transaction_id) == {
            # the member's 10 000 SKY go home to SKY, the fee with them
            "SKY:alice": -10_000,
            "SKY:issuance": 10_000,
            # HTL issues 7 425 HTL to its member
            "HTL:issuance": -7_425,
            "HTL:alice": 7_425,
            # SKY owes 60.60 EUR: 59.40 to HTL, 1.20 to the operator
            "EUR:Sky Air": -60_600_000,
            "EUR:Hotel Co": 59_400_000,
            "EUR:Coalition": 1_200_000,
        }
    row = await _transaction(sessions, conversion.transaction_id)
    assert (row.kind, row.points, row.partner_id) == ("convert", 10_000, sky.id)
    assert row.rate_version_id == priced["rate"].id
    details = json.loads(row.details)
    assert details["fee"] == 100 and details["out"] == 7_425 and details["points"] == 10_000
    assert details["source_value_micros"] == 12_000
    assert details["destination_value_micros"] == 8_000

    # Reverse 3 333 of the 10 000 points: cumulative floors on the points ledgers, and money
    # that follows the points moved back: 2 474 HTL at 8 000 and 33 fee points at 12 000.
    async with sessions() as s, s.begin():
        first = await reverse(s, sky, conversion.transaction_id, 3_333)
    async with sessions() as s:
        assert await postings(s, first.id) == {
            "SKY:alice": 3_333,
            "SKY:issuance": -3_333,
            "HTL:issuance": 2_474,  # floor(7 425 * 0.3333) = floor(2 474.75)
            "HTL:alice": -2_474,
            "EUR:Sky Air": 20_188_000,
            "EUR:Hotel Co": -19_792_000,  # 2 474 * 8 000
            "EUR:Coalition": -396_000,  # floor(100 * 0.3333) = 33 fee points * 12 000
        }
    # ... and the other 6 667: each leg's remainder, exactly.
    async with sessions() as s, s.begin():
        rest = await reverse(s, sky, conversion.transaction_id)
    assert rest.points == 6_667
    async with sessions() as s:
        assert await postings(s, rest.id) == {
            "SKY:alice": 6_667,
            "SKY:issuance": -6_667,
            "HTL:issuance": 4_951,
            "HTL:alice": -4_951,
            "EUR:Sky Air": 40_412_000,
            "EUR:Hotel Co": -39_608_000,  # 4 951 * 8 000
            "EUR:Coalition": -804_000,  # 67 * 12 000
        }
        assert await balances(s) == before
    reversal = await _transaction(sessions, rest.id)
    assert reversal.rate_version_id == priced["rate"].id
    await _assert_balanced(sessions)


async def test_a_conversion_without_fee_books_nothing_to_the_operator(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo, alice: str
) -> None:
    # No operator is registered: a conversion without a fee does not need one.
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        await rates.set_rate(s, "SKY", "HTL", from_points=1, to_points=2, fee_bps=0)
    async with sessions() as s, s.begin():
        conversion = await conversions.post_conversion(s, sky, "alice", "HTL", "alice", 1_000)
    async with sessions() as s:
        assert await postings(s, conversion.transaction_id) == {
            "SKY:alice": -1_000,
            "SKY:issuance": 1_000,
            "HTL:issuance": -2_000,
            "HTL:alice": 2_000,
            "EUR:Sky Air": -16_000_000,
            "EUR:Hotel Co": 16_000_000,
        }


async def test_a_converted_member_cannot_spend_more_than_available(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    operator: PartnerInfo,
    priced: dict[str, Any],
    alice: str,
) -> None:
    with pytest.raises(InsufficientPoints) as refused:
        async with sessions() as s, s.begin():
            await conversions.post_conversion(s, sky, "alice", "HTL", "alice", 20_001)
    assert refused.value.extra == {"member_ref": "alice", "available": 20_000, "requested": 20_001}


# --- properties ---------------------------------------------------------------------------------

_moments = itertools.count(1)

# Mostly conversions that go through, with the edges (tiny amounts, a 100% fee) drawn too.
rate_sides = st.one_of(st.integers(1, 10_000), st.integers(1, 20))
fees = st.one_of(st.integers(0, 2_000), st.sampled_from([0, 1, 9_999, 10_000]))
values = st.one_of(st.integers(1, 1_000_000), st.sampled_from([1, 1_000_000]))
points = st.one_of(st.integers(10_000, 10**12), st.integers(1, 2_000))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    p=points,
    from_points=rate_sides,
    to_points=rate_sides,
    fee_bps=fees,
    min_points=st.one_of(st.just(0), st.integers(0, 5_000)),
    source_value=values,
    destination_value=values,
)
async def test_conversions_balance_on_every_ledger_and_reverse_to_nothing(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    operator: PartnerInfo,
    p: int,
    from_points: int,
    to_points: int,
    fee_bps: int,
    min_points: int,
    source_value: int,
    destination_value: int,
) -> None:
    # Every example prices at its own future moment, under versions that take effect then.
    at = utcnow() + dt.timedelta(days=1, seconds=next(_moments))
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "pat")
        await enrol_member(s, htl, "pat")
        await issue(s, sky, "pat", p)
        await rates.set_point_value(s, "SKY", source_value, effective_at=at)
        await rates.set_point_value(s, "HTL", destination_value, effective_at=at)
        rate = await rates.set_rate(
            s, "SKY", "HTL", from_points=from_points, to_points=to_points,
            fee_bps=fee_bps, min_points=min_points, effective_at=at,
        )  # fmt: skip
    async with sessions() as s:
        before_counts, before = await counts(s), await balances(s)

    try:
        async with sessions() as s, s.begin():
            conversion = await conversions.post_conversion(s, sky, "pat", "HTL", "pat", p, at=at)
    except (BelowMinimum, ZeroOutput, LimitExceeded) as refused:
        event(f"refused {refused.slug}")
        exact_out = Fraction((p - -(-p * fee_bps // 10_000)) * to_points, from_points)
        assert (
            p < min_points
            or exact_out < 1
            or (isinstance(refused, LimitExceeded) and exact_out > 10**12)
        )
        async with sessions() as s:
            assert await counts(s) == before_counts
        return

    event("converted")
    assert conversion.rate_version_id == rate.id
    fee, out, converted = conversion.fee, conversion.out, conversion.points - conversion.fee
    assert conversion.points == p and fee + converted == p
    assert fee == -(-p * fee_bps // 10_000) and 0 <= fee <= p
    exact = Fraction(converted * to_points, from_points)
    assert 1 <= out <= exact < out + 1
    async with sessions() as s:
        page = await postings(s, conversion.transaction_id)
        assert page["SKY:pat"] == -p and page["HTL:pat"] == out
        assert page["EUR:Hotel Co"] == out * destination_value
        assert page.get("EUR:Coalition", 0) == fee * source_value
        assert all(amount >= 0 for amount in (page["HTL:pat"], page["EUR:Hotel Co"]))
        after = await balances(s)
        assert all(balance >= 0 for name, balance in after.items() if name.endswith(":pat"))
        assert set((await ledger_sums(s)).values()) == {0}
        assert (await verify_ledger(s)).ok

    # The full reversal puts every balance back where it was before the conversion.
    async with sessions() as s, s.begin():
        await reverse(s, sky, conversion.transaction_id)
    async with sessions() as s:
        assert await balances(s) == before
        assert set((await ledger_sums(s)).values()) == {0}


# --- refusals: a clear error, and nothing posted ------------------------------------------------


async def _refused(
    sessions: Sessions, error: type[DomainError], work: Callable[[AsyncSession], Awaitable[Any]]
) -> DomainError:
    async with sessions() as s:
        before = await counts(s)
    with pytest.raises(error) as refused:
        async with sessions() as s, s.begin():
            await work(s)
    async with sessions() as s:
        assert await counts(s) == before
    return refused.value


@pytest.fixture
async def world(
    sessions: Sessions,
    settings: Settings,
    sky: PartnerInfo,
    htl: PartnerInfo,
    operator: PartnerInfo,
    priced: dict[str, Any],
    alice: str,
) -> dict[str, PartnerInfo]:
    """SKY, HTL, a third brand CAR with a rate from SKY but no point value, and a charity."""
    car = await make_partner(sessions, settings, "brand", "Car Rental", "CAR")
    charity = await make_partner(sessions, settings, "charity", "Clean Water")
    async with sessions() as s, s.begin():
        await enrol_member(s, car, "alice")
        await rates.set_rate(s, "SKY", "CAR", from_points=1, to_points=1, fee_bps=0)
        await rates.set_rate(
            s, "HTL", "SKY", from_points=1_000, to_points=1, fee_bps=0, min_points=0
        )
        await enrol_member(s, htl, "bob")
        await issue(s, htl, "bob", 10_000)
        await enrol_member(s, sky, "bob")
    return {"sky": sky, "htl": htl, "car": car, "charity": charity}


@pytest.mark.parametrize(
    ("case", "error", "slug", "status"),
    [
        ("unknown currency", UnknownCurrency, "unknown-currency", 422),
        ("same brand", SameBrand, "same-brand", 422),
        ("destination not enrolled", MemberNotEnrolled, "member-not-enrolled", 422),
        ("source not a member", MemberNotFound, "member-not-found", 404),
        ("caller not a brand", NotABrand, "not-a-brand", 403),
        ("below the rate's minimum", BelowMinimum, "below-minimum", 422),
        ("nothing out", ZeroOutput, "zero-output", 422),
        ("no rate in force", RateNotFound, "rate-not-found", 422),
        ("no point value in force", PointValueNotFound, "point-value-not-found", 422),
        ("zero points", InvalidAmount, "invalid-amount", 422),
        ("too many points", InvalidAmount, "invalid-amount", 422),
    ],
)
async def test_conversion_refusals(
    sessions: Sessions,
    world: dict[str, PartnerInfo],
    case: str,
    error: type[DomainError],
    slug: str,
    status: int,
) -> None:
    sky, htl = world["sky"], world["htl"]
    attempts: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
        "unknown currency": lambda s: conversions.post_conversion(
            s, sky, "alice", "XXX", "alice", 1_000
        ),
        "same brand": lambda s: conversions.post_conversion(s, sky, "alice", "SKY", "alice", 1_000),
        "destination not enrolled": lambda s: conversions.post_conversion(
            s, sky, "alice", "HTL", "carol", 1_000
        ),
        "source not a member": lambda s: conversions.post_conversion(
            s, sky, "carol", "HTL", "alice", 1_000
        ),
        "caller not a brand": lambda s: conversions.post_conversion(
            s, world["charity"], "alice", "HTL", "alice", 1_000
        ),
        "below the rate's minimum": lambda s: conversions.post_conversion(
            s, sky, "alice", "HTL", "alice", 499
        ),
        # 999 HTL at 1000:1 gives 0.999 SKY
        "nothing out": lambda s: conversions.post_conversion(s, htl, "bob", "SKY", "bob", 999),
        "no rate in force": lambda s: conversions.post_conversion(
            s, world["car"], "alice", "SKY", "alice", 1_000
        ),
        "no point value in force": lambda s: conversions.post_conversion(
            s, sky, "alice", "CAR", "alice", 1_000
        ),
        "zero points": lambda s: conversions.post_conversion(s, sky, "alice", "HTL", "alice", 0),
        "too many points": lambda s: conversions.post_conversion(
            s, sky, "alice", "HTL", "alice", 10**12 + 1
        ),
    }  # fmt: skip
    refused = await _refused(sessions, error, attempts[case])
    assert (refused.slug, refused.status) == (slug, status)
    assert refused.detail


async def test_conversion_with_a_fee_needs_the_operator(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo, priced: dict[str, Any], alice: str
) -> None:
    refused = await _refused(
        sessions,
        OperatorNotConfigured,
        lambda s: conversions.post_conversion(s, sky, "alice", "HTL", "alice", 1_000),
    )
    assert refused.slug == "operator-not-configured"


async def test_quote_refusals(sessions: Sessions, world: dict[str, PartnerInfo]) -> None:
    sky, htl = world["sky"], world["htl"]
    now = utcnow()
    async with sessions() as s, s.begin():
        quote = await quotes.create_quote(s, sky, "alice", "HTL", "alice", 2_000, 60, at=now)
    assert (quote.fee, quote.out, quote.expires_at) == (20, 1_485, now + dt.timedelta(seconds=60))

    # Another brand cannot see it; a request that differs from it is refused.
    await _refused(
        sessions,
        QuoteNotFound,
        lambda s: conversions.post_conversion(s, htl, None, None, None, None, quote_id=quote.id),
    )
    mismatch = await _refused(
        sessions,
        QuoteMismatch,
        lambda s: conversions.post_conversion(
            s, sky, "alice", "HTL", "alice", 2_001, quote_id=quote.id
        ),
    )
    assert mismatch.extra["field"] == "points"
    # Expired from its expiry on.
    expired = await _refused(
        sessions,
        QuoteExpired,
        lambda s: conversions.post_conversion(
            s, sky, None, None, None, None, quote_id=quote.id, at=quote.expires_at
        ),
    )
    assert (expired.slug, expired.status) == ("quote-expired", 422)

    # Spent once; the second spend is refused and posts nothing.
    async with sessions() as s, s.begin():
        spent = await conversions.post_conversion(
            s, sky, "alice", "HTL", "alice", 2_000, quote_id=quote.id, at=now
        )
    assert (spent.quote_id, spent.fee, spent.out) == (quote.id, 20, 1_485)
    used = await _refused(
        sessions,
        QuoteUsed,
        lambda s: conversions.post_conversion(
            s, sky, None, None, None, None, quote_id=quote.id, at=now
        ),
    )
    assert (used.slug, used.status) == ("quote-used", 409)


async def test_a_refused_conversion_leaves_its_quote_unspent(
    sessions: Sessions, world: dict[str, PartnerInfo]
) -> None:
    sky = world["sky"]
    async with sessions() as s, s.begin():
        quote = await quotes.create_quote(s, sky, "alice", "HTL", "alice", 20_000)
        await redeem(s, sky, "alice", 1)
    await _refused(
        sessions,
        InsufficientPoints,
        lambda s: conversions.post_conversion(s, sky, None, None, None, None, quote_id=quote.id),
    )
    async with sessions() as s, s.begin():
        await issue(s, sky, "alice", 1)
        spent = await conversions.post_conversion(s, sky, None, None, None, None, quote_id=quote.id)
    assert spent.out == quote.out


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("below the rate's minimum", BelowMinimum),
        ("no rate in force", RateNotFound),
    ],
)
async def test_a_quote_refuses_what_the_conversion_would(
    sessions: Sessions, world: dict[str, PartnerInfo], case: str, error: type[DomainError]
) -> None:
    sky = world["sky"]
    attempts: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
        "below the rate's minimum": lambda s: quotes.create_quote(
            s, sky, "alice", "HTL", "alice", 1
        ),
        "no rate in force": lambda s: quotes.create_quote(
            s, world["car"], "alice", "SKY", "alice", 1_000
        ),
    }
    await _refused(sessions, error, attempts[case])


# --- concurrency --------------------------------------------------------------------------------


async def test_one_quote_is_spent_once_under_concurrency(
    sessions: Sessions, world: dict[str, PartnerInfo]
) -> None:
    sky = world["sky"]
    async with sessions() as s, s.begin():
        quote = await quotes.create_quote(s, sky, "alice", "HTL", "alice", 1_000)

    async def spend() -> conversions.Conversion:
        async with sessions() as s, s.begin():
            return await conversions.post_conversion(
                s, sky, None, None, None, None, quote_id=quote.id
            )

    outcomes = await asyncio.gather(*(spend() for _ in range(8)), return_exceptions=True)
    spent = [o for o in outcomes if isinstance(o, conversions.Conversion)]
    refused = [o for o in outcomes if not isinstance(o, conversions.Conversion)]
    assert len(spent) == 1
    assert all(isinstance(o, QuoteUsed) for o in refused), refused
    async with sessions() as s:
        assert (await member_balance(s, sky, "alice")).balance == 19_000
    await _assert_balanced(sessions)


@pytest.mark.postgres_only
async def test_opposite_conversions_race_without_deadlock(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo, operator: PartnerInfo
) -> None:
    members = [f"m{i}" for i in range(5)]
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        await rates.set_rate(s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)
        await rates.set_rate(s, "HTL", "SKY", from_points=750, to_points=1_000, fee_bps=150)
        for member in members:
            for brand in (sky, htl):
                await enrol_member(s, brand, member)
                await issue(s, brand, member, 1_000_000)

    async def convert(i: int, source: PartnerInfo, to: str) -> conversions.Conversion:
        async with sessions() as s, s.begin():
            # Source and destination members differ, so locks cross between members too.
            return await conversions.post_conversion(
                s, source, members[i % 5], to, members[(i + 1) % 5], 1_000 + i
            )

    outcomes = await asyncio.gather(
        *(convert(i, sky, "HTL") for i in range(100)),
        *(convert(i, htl, "SKY") for i in range(100)),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if not isinstance(o, conversions.Conversion)]
    assert not failures, failures[:3]
    async with sessions() as s:
        converted = await s.scalar(
            select(func.count()).where(LedgerTransaction.__table__.c.kind == "convert")
        )
        assert converted == 200
        sky_out = sum(1_000 + i for i in range(100))
        htl_out = sum(1_000 + i for i in range(100))
        page = await balances(s)
        assert sum(page[f"SKY:{m}"] for m in members) == 5_000_000 - sky_out + sum(
            o.out
            for o in outcomes
            if isinstance(o, conversions.Conversion) and o.to_currency == "SKY"
        )
        assert sum(page[f"HTL:{m}"] for m in members) == 5_000_000 - htl_out + sum(
            o.out
            for o in outcomes
            if isinstance(o, conversions.Conversion) and o.to_currency == "HTL"
        )
    await _assert_balanced(sessions)
