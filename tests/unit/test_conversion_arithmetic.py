"""Conversion arithmetic: the SPEC's worked example, exact-rounding properties, bad inputs.

The oracles use fractions.Fraction, never floats: every expected value below is exact.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.conversions.arithmetic import (
    MAX_POINTS,
    MIN_POINTS,
    ConversionAmounts,
    ConversionMoney,
    ConversionRefused,
    RateTerms,
    conversion_amounts,
    conversion_money,
    cumulative_share,
    money_micros,
    reversal_share,
)

PROPERTY = settings(max_examples=2_000, deadline=None, derandomize=True, database=None)

SKY_VALUE_MICROS = 12_000  # 1.2 cents per SKY point
HTL_VALUE_MICROS = 8_000  # 0.8 cents per HTL point
SKY_TO_HTL = RateTerms(from_points=1_000, to_points=750, fee_bps=100, min_points=1_000)

# Amounts across the whole range, with small ones (where rounding bites) drawn often.
points_amounts = st.one_of(st.integers(MIN_POINTS, MAX_POINTS), st.integers(MIN_POINTS, 10_000))
rate_sides = st.one_of(st.integers(1, 10**6), st.integers(1, 20))
fees_bps = st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 9_999, 10_000]))


# --- worked examples ---------------------------------------------------------------------------


def test_member_converts_10_000_sky_to_htl_at_1000_to_750_with_1_percent_fee() -> None:
    amounts = conversion_amounts(10_000, SKY_TO_HTL)

    # fee = ceil(10 000 * 100 / 10 000) = 100 SKY to the operator
    # converted = 10 000 - 100 = 9 900 SKY
    # out = floor(9 900 * 750 / 1 000) = floor(7 425) = 7 425 HTL to the member
    assert amounts == ConversionAmounts(points=10_000, fee=100, converted=9_900, out=7_425)

    money = conversion_money(amounts, SKY_VALUE_MICROS, HTL_VALUE_MICROS)

    # SKY owes HTL 7 425 HTL * 8 000 micros = 59 400 000 micros (59.40 EUR)
    # SKY owes the operator 100 SKY * 12 000 micros = 1 200 000 micros (1.20 EUR)
    assert money == ConversionMoney(destination_micros=59_400_000, operator_fee_micros=1_200_000)


def test_fee_rounds_up_and_out_rounds_down() -> None:
    amounts = conversion_amounts(1_001, SKY_TO_HTL)

    # fee = ceil(1 001 * 100 / 10 000) = ceil(10.01) = 11, not 10
    # out = floor(990 * 750 / 1 000) = floor(742.5) = 742, not 743
    assert amounts == ConversionAmounts(points=1_001, fee=11, converted=990, out=742)


def test_one_point_with_any_fee_pays_it_all_in_fee() -> None:
    terms = RateTerms(from_points=1, to_points=1, fee_bps=1, min_points=0)

    with pytest.raises(ConversionRefused) as refused:
        conversion_amounts(1, terms)  # fee = ceil(0.0001) = 1, converted 0, out 0

    assert refused.value.reason == "zero-output"


def test_below_minimum_is_refused_before_anything_else() -> None:
    with pytest.raises(ConversionRefused) as refused:
        conversion_amounts(999, SKY_TO_HTL)

    assert (refused.value.reason, refused.value.points, refused.value.min_points) == (
        "below-minimum",
        999,
        1_000,
    )


def test_minimum_itself_is_allowed() -> None:
    assert conversion_amounts(1_000, SKY_TO_HTL).out == 742  # floor(990 * 0.75) = floor(742.5)


def test_reversing_the_worked_example_in_three_parts_gives_back_every_point() -> None:
    # 10 000 SKY -> 7 425 HTL with a 100 SKY fee, reversed as 3 333 + 3 333 + 3 334 SKY.
    # Cumulative floors of the HTL leg: floor(7 425 * 3 333 / 10 000) = floor(2 474.75) = 2 474,
    # floor(7 425 * 6 666 / 10 000) = floor(4 949.50) = 4 949, then 7 425: parts 2 474, 2 475,
    # 2 476. Flooring each part on its own would give 2 474 + 2 474 + 2 475 = 7 423: 2 HTL lost.
    # Fee leg: floor(100 * 3 333 / 10 000) = 33, then 66, then 100: parts 33, 33, 34.
    parts = [(0, 3_333), (3_333, 3_333), (6_666, 3_334)]

    out_parts = [reversal_share(7_425, 10_000, r, already_reversed=before) for before, r in parts]
    fee_parts = [reversal_share(100, 10_000, r, already_reversed=before) for before, r in parts]
    source_parts = [
        reversal_share(10_000, 10_000, r, already_reversed=before) for before, r in parts
    ]

    assert out_parts == [2_474, 2_475, 2_476]
    assert fee_parts == [33, 33, 34]
    assert source_parts == [3_333, 3_333, 3_334]  # the member gets back exactly what it reverses


def test_full_reversal_returns_each_leg_exactly() -> None:
    assert reversal_share(7_425, 10_000, 10_000) == 7_425
    assert reversal_share(100, 10_000, 10_000) == 100
    assert cumulative_share(7_425, 10_000, 10_000) == 7_425


# --- properties --------------------------------------------------------------------------------


@PROPERTY
@given(
    points=points_amounts,
    from_points=rate_sides,
    to_points=rate_sides,
    fee_bps=fees_bps,
)
def test_conversion_is_exactly_rounded(
    points: int, from_points: int, to_points: int, fee_bps: int
) -> None:
    terms = RateTerms(from_points=from_points, to_points=to_points, fee_bps=fee_bps, min_points=0)
    exact_fee = Fraction(points * fee_bps, 10_000)

    try:
        amounts = conversion_amounts(points, terms)
    except ConversionRefused as refused:
        assert refused.reason == "zero-output"
        assert Fraction((points - math.ceil(exact_fee)) * to_points, from_points) < 1
        return

    exact_out = Fraction(amounts.converted * to_points, from_points)
    assert amounts.points == points
    assert amounts.fee + amounts.converted == points
    assert 0 <= amounts.fee <= points
    assert amounts.fee >= exact_fee > amounts.fee - 1
    assert amounts.out <= exact_out < amounts.out + 1
    assert amounts.out >= 1
    assert min(amounts.fee, amounts.converted, amounts.out) >= 0


@PROPERTY
@given(
    points=points_amounts,
    from_points=rate_sides,
    to_points=rate_sides,
    fee_bps=fees_bps,
    min_points=st.one_of(st.integers(0, 20_000), st.integers(0, MAX_POINTS + 1)),
)
def test_refused_exactly_when_below_minimum_or_nothing_comes_out(
    points: int, from_points: int, to_points: int, fee_bps: int, min_points: int
) -> None:
    terms = RateTerms(from_points, to_points, fee_bps, min_points)
    fee = math.ceil(Fraction(points * fee_bps, 10_000))
    if points < min_points:
        expected = "below-minimum"
    elif Fraction((points - fee) * to_points, from_points) < 1:
        expected = "zero-output"
    else:
        expected = None

    if expected is None:
        assert conversion_amounts(points, terms).out >= 1
    else:
        with pytest.raises(ConversionRefused) as refused:
            conversion_amounts(points, terms)
        assert refused.value.reason == expected


@PROPERTY
@given(
    points=points_amounts,
    fee_bps=fees_bps,
    source_value=st.integers(0, 10**9),
    destination_value=st.integers(0, 10**9),
)
def test_money_owed_is_points_times_value_exactly(
    points: int, fee_bps: int, source_value: int, destination_value: int
) -> None:
    terms = RateTerms(from_points=1, to_points=1, fee_bps=fee_bps, min_points=0)
    try:
        amounts = conversion_amounts(points, terms)
    except ConversionRefused:
        return

    money = conversion_money(amounts, source_value, destination_value)

    assert money.destination_micros == amounts.out * destination_value >= 0
    assert money.operator_fee_micros == amounts.fee * source_value >= 0


@st.composite
def reversal_plans(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A leg, the source points P, and the cumulative points after each partial reversal."""
    total = draw(st.one_of(st.integers(1, 50), st.integers(1, MAX_POINTS)))
    leg = draw(st.one_of(st.integers(0, total), st.integers(0, MAX_POINTS)))
    cuts = draw(st.lists(st.integers(1, total), max_size=20))
    return leg, total, [*sorted(set(cuts) - {total}), total]


@PROPERTY
@given(plan=reversal_plans())
def test_partial_reversals_sum_to_the_leg_exactly(plan: tuple[int, int, list[int]]) -> None:
    leg, total, cumulative = plan
    before = 0
    reversed_so_far = 0

    for after in cumulative:
        part = reversal_share(leg, total, after - before, already_reversed=before)
        reversed_so_far += part

        assert part >= 0
        assert part == cumulative_share(leg, total, after) - cumulative_share(leg, total, before)
        assert reversed_so_far <= Fraction(leg * after, total)  # never ahead of proportional
        assert reversal_share(total, total, after - before, already_reversed=before) == (
            after - before
        )  # the member's source leg comes back point for point
        before = after

    assert reversed_so_far == leg


@PROPERTY
@given(plan=reversal_plans())
def test_converted_leg_as_the_difference_stays_within_bounds(
    plan: tuple[int, int, list[int]],
) -> None:
    # Fee and converted points must add up to the source points reversed; taking the converted
    # share as the difference keeps it monotone and ending exactly at P - fee.
    fee, total, cumulative = plan
    fee = min(fee, total)
    previous = 0

    for after in cumulative:
        converted_reversed = after - cumulative_share(fee, total, after)
        assert previous <= converted_reversed <= total - fee
        previous = converted_reversed

    assert previous == total - fee


# --- bad input ---------------------------------------------------------------------------------

BAD_AMOUNTS = [0, -1, MAX_POINTS + 1, 10**13, True, False, 1.5, "10", None]


@pytest.mark.parametrize("bad", BAD_AMOUNTS, ids=repr)
def test_conversion_amount_outside_1_to_10_12_or_not_an_int_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError):
        conversion_amounts(bad, SKY_TO_HTL)


def test_largest_amount_is_accepted() -> None:
    assert conversion_amounts(MAX_POINTS, SKY_TO_HTL).out == 742_500_000_000


@pytest.mark.parametrize(
    "field, bad",
    [
        ("from_points", 0),
        ("from_points", -1),
        ("to_points", 0),
        ("to_points", True),
        ("fee_bps", -1),
        ("fee_bps", 10_001),
        ("fee_bps", 1.5),
        ("min_points", -1),
        ("min_points", "10"),
    ],
)
def test_rate_terms_out_of_range_are_rejected(field: str, bad: Any) -> None:
    fields: dict[str, Any] = {"from_points": 1_000, "to_points": 750, "fee_bps": 100}
    fields["min_points"] = 0
    fields[field] = bad

    with pytest.raises(ValueError):
        RateTerms(**fields)


@pytest.mark.parametrize("points, value", [(-1, 12_000), (10, -1), (True, 12_000), (10, "1")])
def test_money_of_negative_or_non_integer_amounts_is_rejected(points: Any, value: Any) -> None:
    with pytest.raises(ValueError):
        money_micros(points, value)


@pytest.mark.parametrize(
    "leg, total, cumulative",
    [(-1, 10, 5), (7, 0, 0), (7, 10, 11), (7, 10, -1), (7, 10, True)],
)
def test_cumulative_share_outside_the_conversion_is_rejected(
    leg: Any, total: Any, cumulative: Any
) -> None:
    with pytest.raises(ValueError):
        cumulative_share(leg, total, cumulative)


def test_reversing_more_than_was_converted_is_rejected() -> None:
    with pytest.raises(ValueError):
        reversal_share(7_425, 10_000, 5_000, already_reversed=6_000)
    with pytest.raises(ValueError):
        reversal_share(7_425, 10_000, 10_001)
