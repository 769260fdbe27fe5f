"""Who owes whom inside one transaction (``netting.pair_legs``)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.netting import Obligation, pair_legs

PROPERTY = settings(max_examples=1_000, deadline=None, derandomize=True, database=None)


def test_a_conversion_source_owes_destination_and_operator() -> None:
    legs = {"SKY": -63_107_025, "HTL": 61_872_525, "OP": 1_234_500}
    assert pair_legs(legs) == [
        Obligation("SKY", "HTL", 61_872_525),
        Obligation("SKY", "OP", 1_234_500),
    ]


def test_a_reversed_conversion_owes_the_source_back() -> None:
    legs = {"SKY": 31_553_512, "HTL": -30_936_262, "OP": -617_250}
    assert pair_legs(legs) == [
        Obligation("HTL", "SKY", 30_936_262),
        Obligation("OP", "SKY", 617_250),
    ]


def test_several_on_both_sides_pair_greedily_in_participant_order() -> None:
    legs = {"A": -5, "B": -7, "X": 4, "Y": 8}
    assert pair_legs(legs) == [
        Obligation("A", "X", 4),
        Obligation("A", "Y", 1),
        Obligation("B", "Y", 7),
    ]


def test_zero_legs_take_no_part_and_unbalanced_legs_are_refused() -> None:
    assert pair_legs({"A": -3, "B": 3, "C": 0}) == [Obligation("A", "B", 3)]
    assert pair_legs({}) == []
    with pytest.raises(ValueError):
        pair_legs({"A": -3, "B": 2})


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from("ABCDEFGH"), st.integers(-(10**15), 10**15), min_size=1, max_size=8
    )
)
def test_every_leg_is_accounted_for(raw: dict[str, int]) -> None:
    # Make the legs sum to zero by moving the excess onto one participant.
    first = sorted(raw)[0]
    legs = {**raw, first: raw[first] - sum(raw.values())}
    pairs = pair_legs(legs)
    moved: Counter[str] = Counter()
    for o in pairs:
        moved[o.debtor] -= o.amount_micros
        moved[o.creditor] += o.amount_micros
    assert {p: a for p, a in moved.items() if a} == {p: a for p, a in legs.items() if a}
    sides = sum(1 for a in legs.values() if a)
    assert len(pairs) <= max(sides - 1, 0)
