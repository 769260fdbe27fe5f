"""What an order earns and what its returns take back (``exchange.purchases.arithmetic``).

The worked example is the integration test's (``tests/integration/test_purchases.py``): 3 points
per 200 cents, shoes 1.5x, books doubled by a promotion: 202 + 75 + 19 = 296 points; with a cap
of 250 the lines keep floor(202 * 250 / 296) = 170, 63 and 16 (249), and the missing point
goes to the largest remainder (shoes: 202 * 250 mod 296 = 180), so 171 + 63 + 16 = 250."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import CurrencyNotEarning
from exchange.purchases.arithmetic import (
    BPS,
    EarnRules,
    Line,
    PromotionTerms,
    Rate,
    capped,
    line_points,
    order_earn,
    returned_points,
)

NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
RULES = EarnRules(
    rates={"EUR": Rate(3, 200)},
    product_types={},
    categories={"shoes": 15_000},
    promotions=(PromotionTerms(20_000, NOW - DAY, NOW + DAY, category="books"),),
)
LINES = [
    Line("RUN-42", "apparel", "shoes", 8_999),
    Line("BOOK-7", "media", "books", 2_500, 2),
    Line("SOCKS", "apparel", "accessories", 1_299, 3),
]


def test_the_worked_example() -> None:
    earned = order_earn(RULES, "EUR", LINES, NOW)
    assert [line.points for line in earned.lines] == [202, 75, 19]
    assert (earned.points, earned.capped) == (296, False)
    assert [(x.category_bps, x.promotion_bps) for x in earned.lines] == [
        (15_000, BPS),
        (BPS, 20_000),
        (BPS, BPS),
    ]


def test_the_promotion_holds_from_its_start_until_before_its_end() -> None:
    books = [LINES[1]]
    assert order_earn(RULES, "EUR", books, NOW - DAY).points == 75
    assert order_earn(RULES, "EUR", books, NOW + DAY).points == 37  # floor(37.5)
    greater = PromotionTerms(30_000, NOW - DAY, NOW + DAY)  # every line, 3x: the greatest wins
    both = EarnRules(RULES.rates, {}, {}, (*RULES.promotions, greater))
    assert order_earn(both, "EUR", books, NOW).points == 112  # floor(2 500 * 3 * 3 / 200)


def test_a_cap_is_shared_by_largest_remainder() -> None:
    cut = EarnRules(RULES.rates, {}, RULES.categories, RULES.promotions, order_cap=250)
    earned = order_earn(cut, "EUR", LINES, NOW)
    assert [line.points for line in earned.lines] == [171, 63, 16]
    assert (earned.points, earned.capped) == (250, True)


def test_a_currency_without_a_rate_is_refused() -> None:
    with pytest.raises(CurrencyNotEarning):
        order_earn(RULES, "USD", LINES, NOW)


def test_returns_of_a_line_take_back_cumulative_floors() -> None:
    assert returned_points(75, 2, 0, 1) == 37
    assert returned_points(75, 2, 1, 2) == 38
    assert returned_points(19, 3, 0, 2) == 12
    assert returned_points(19, 3, 2, 3) == 7
    with pytest.raises(ValueError, match="out of range"):
        returned_points(19, 3, 2, 4)


lines_st = st.lists(
    st.builds(
        Line,
        sku=st.just("sku"),
        product_type=st.sampled_from(["apparel", "media"]),
        category=st.sampled_from(["shoes", "books", "food"]),
        amount_minor=st.integers(0, 10**9),
        quantity=st.integers(1, 12),
    ),
    min_size=1,
    max_size=8,
)


@given(
    lines=lines_st,
    cap=st.none() | st.integers(1, 10**6),
    rate=st.builds(Rate, st.integers(1, 1_000), st.integers(1, 10_000)),
    data=st.data(),
)
def test_an_orders_returns_never_take_back_more_than_it_earned(
    lines: list[Line], cap: int | None, rate: Rate, data: st.DataObject
) -> None:
    """Over random orders and random sequences of returns (some asking for more units than are
    left, which are refused as the service refuses them): what is taken back is never more than
    the order earned, each line's points stay within the line's, and returning everything takes
    back exactly the order's points."""
    rules = EarnRules({"EUR": rate}, {"media": 5_000}, {"shoes": 15_000}, RULES.promotions, cap)
    earned = order_earn(rules, "EUR", lines, NOW)
    raw = order_earn(
        EarnRules({"EUR": rate}, {"media": 5_000}, {"shoes": 15_000}, RULES.promotions),
        "EUR",
        lines,
        NOW,
    )
    assert cap is None or earned.points <= cap
    assert all(c.points <= r.points for c, r in zip(earned.lines, raw.lines, strict=True))
    returned = [0] * len(lines)
    taken = 0
    for _ in range(data.draw(st.integers(0, 12))):
        index = data.draw(st.integers(0, len(lines) - 1))
        units = data.draw(st.integers(1, lines[index].quantity + 1))
        after = returned[index] + units
        if after > lines[index].quantity:
            continue  # return-exceeds-purchase: nothing taken
        taken += returned_points(
            earned.lines[index].points, lines[index].quantity, returned[index], after
        )
        returned[index] = after
        assert earned.points - taken >= 0
    for index, line in enumerate(lines):
        taken += returned_points(
            earned.lines[index].points, line.quantity, returned[index], line.quantity
        )
    assert taken == earned.points


@given(points=st.lists(st.integers(0, 10**9), min_size=1, max_size=20), cap=st.integers(0, 10**9))
def test_a_capped_order_sums_to_its_cap(points: list[int], cap: int) -> None:
    shares = capped(points, cap)
    assert sum(shares) == min(cap, sum(points))
    assert all(0 <= share <= point for share, point in zip(shares, points, strict=True))


def test_line_points_round_down_once() -> None:
    # 1 cent at 1 point per 3 cents, 3x: exactly 1, not 0 (no rounding before the multiplier).
    assert line_points(Rate(1, 3), 1, 30_000) == 1
    assert line_points(Rate(1, 3), 1, 29_999) == 0
