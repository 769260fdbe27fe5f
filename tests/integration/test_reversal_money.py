"""A conversion's money follows its points through partial reversals (issue 16).

For each conversion, at every moment: the destination is owed ``(out - out reversed) *
value(destination)`` and the operator ``(fee - fee refunded) * value(source)``, where ``out
reversed`` is the destination points the reversals actually moved back (read from the ledger)
and ``fee refunded`` the cumulative floor ``floor(fee * c / P)`` of ``c`` source points reversed.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.conversions import service as conversions
from exchange.errors import BelowMinimum, LimitExceeded, ZeroOutput
from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.operations import issue
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reversal import ConversionTerms, conversion_money_reversed, reverse
from exchange.pricing import service as rates
from exchange.settings import Settings
from tests.conftest import make_partner
from tests.integration.ledger_pages import ledger_sums, postings

Sessions = async_sessionmaker[AsyncSession]
_moments = itertools.count(1)


@pytest.fixture
async def operator(sessions: Sessions, settings: Settings) -> PartnerInfo:
    return await make_partner(sessions, settings, "operator", "Coalition")


async def _reversals(sessions: Sessions, conversion_id: Any) -> list[dict[str, int]]:
    async with sessions() as s:
        ids = (
            await s.scalars(
                select(LedgerTransaction.id)
                .where(LedgerTransaction.reverses_id == conversion_id)
                .order_by(LedgerTransaction.id)
            )
        ).all()
        return [await postings(s, i) for i in ids]


async def test_reversing_1_of_1_000_sky_moves_no_money_when_it_moves_no_htl(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo, operator: PartnerInfo
) -> None:
    """The finding: 1 SKY of 1 000 reversed moved 0 HTL but cut SKY's debt to HTL by micros."""
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 3_330)
        await rates.set_rate(s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)
        for partner in (sky, htl):
            await enrol_member(s, partner, "alice")
        await issue(s, sky, "alice", 1_000)
    async with sessions() as s, s.begin():
        conversion = await conversions.post_conversion(s, sky, "alice", "HTL", "alice", 1_000)
    assert (conversion.fee, conversion.out) == (10, 742)
    async with sessions() as s, s.begin():
        one = await reverse(s, sky, conversion.transaction_id, 1)
    async with sessions() as s:
        # floor(742 / 1000) = 0 HTL back, floor(10 / 1000) = 0 fee back: no money moves.
        assert await postings(s, one.id) == {"SKY:alice": 1, "SKY:issuance": -1}


def test_money_reversed_is_the_points_moved_back_times_their_values() -> None:
    terms = ConversionTerms(
        points=10_000, fee=100, out=7_425, source_value_micros=12_000,
        destination_value_micros=8_000,
    )  # fmt: skip
    # 3 333 of 10 000: floor(7 425 * 0.3333) = 2 474 HTL and floor(100 * 0.3333) = 33 fee points
    assert conversion_money_reversed(terms, 0, 3_333) == (2_474 * 8_000, 33 * 12_000)
    assert conversion_money_reversed(terms, 3_333, 10_000) == (4_951 * 8_000, 67 * 12_000)


@st.composite
def conversions_and_parts(draw: st.DrawFn) -> dict[str, Any]:
    p = draw(st.integers(1, 50_000))
    cuts = draw(st.lists(st.integers(1, p), max_size=5, unique=True))
    bounds = sorted({*cuts, p})
    parts = [b - a for a, b in zip([0, *bounds], bounds, strict=False)]
    return {
        "p": p,
        "from_points": draw(st.integers(1, 2_000)),
        "to_points": draw(st.integers(1, 2_000)),
        "fee_bps": draw(st.sampled_from([0, 1, 100, 2_500, 9_999])),
        "source_value": draw(st.integers(1, 1_000_000)),
        "destination_value": draw(st.integers(1, 1_000_000)),
        "parts": parts[: draw(st.integers(1, len(parts)))],
    }


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=conversions_and_parts())
async def test_destination_and_operator_are_owed_what_the_points_say_after_every_reversal(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    operator: PartnerInfo,
    case: dict[str, Any],
) -> None:
    at = utcnow() + dt.timedelta(days=1, seconds=next(_moments))
    async with sessions() as s, s.begin():
        for partner in (sky, htl):
            await enrol_member(s, partner, "pat")
        await issue(s, sky, "pat", case["p"])
        await rates.set_point_value(s, "SKY", case["source_value"], effective_at=at)
        await rates.set_point_value(s, "HTL", case["destination_value"], effective_at=at)
        await rates.set_rate(
            s, "SKY", "HTL", from_points=case["from_points"], to_points=case["to_points"],
            fee_bps=case["fee_bps"], effective_at=at,
        )  # fmt: skip
    try:
        async with sessions() as s, s.begin():
            conversion = await conversions.post_conversion(
                s, sky, "pat", "HTL", "pat", case["p"], at=at
            )
    except (BelowMinimum, ZeroOutput, LimitExceeded):
        return
    p, fee, out = conversion.points, conversion.fee, conversion.out
    reversed_points = 0
    for part in case["parts"]:
        async with sessions() as s, s.begin():
            await reverse(s, sky, conversion.transaction_id, part)
        reversed_points += part
        async with sessions() as s:
            original = await postings(s, conversion.transaction_id)
        pages = [original, *await _reversals(sessions, conversion.transaction_id)]
        owed_to_htl = sum(page.get("EUR:Hotel Co", 0) for page in pages)
        owed_to_operator = sum(page.get("EUR:Coalition", 0) for page in pages)
        owed_by_sky = sum(page.get("EUR:Sky Air", 0) for page in pages)
        out_reversed = -sum(page.get("HTL:pat", 0) for page in pages[1:])
        fee_refunded = fee * reversed_points // p
        assert owed_to_htl == (out - out_reversed) * case["destination_value"]
        assert owed_to_operator == (fee - fee_refunded) * case["source_value"]
        assert owed_by_sky == -(owed_to_htl + owed_to_operator)
        assert sum(page.get("SKY:pat", 0) for page in pages[1:]) == reversed_points
    async with sessions() as s:
        assert set((await ledger_sums(s)).values()) == {0}
