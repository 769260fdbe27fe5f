"""Netting: an accountant's page for one business day, then properties over many days.

Money in micros (10**-6 EUR); payouts in cents, 1 cent = 10 000 micros.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.netting import (
    Obligation,
    PaymentInstruction,
    Position,
    gross_matrix,
    minor_unit_micros,
    net_positions,
    payment_instructions,
    settle_positions,
)

PROPERTY = settings(max_examples=1_000, deadline=None, derandomize=True, database=None)
EUR_CENTS = 2

# --- worked example ----------------------------------------------------------------------------
#
# Point values: SKY 12 000, HTL 8 000 and SHOP 3 333 micros per point.
#
#   (a) 10 000 SKY -> 7 425 HTL at 1000:750, 100 bps fee 100 SKY
#         SKY owes HTL       7 425 * 8 000 = 59 400 000
#         SKY owes OPERATOR    100 * 12 000 =  1 200 000
#   (b)  1 000 SKY -> 742 HTL at 1000:750, 100 bps fee 10 SKY
#         SKY owes HTL         742 * 8 000 =  5 936 000
#         SKY owes OPERATOR     10 * 12 000 =    120 000
#   (c)  1 001 HTL -> 2 970 SHOP at 1:3, 100 bps fee ceil(10.01) = 11 HTL
#         HTL owes SHOP      2 970 * 3 333 =  9 899 010
#         HTL owes OPERATOR     11 * 8 000 =     88 000
#   (d)  5 003 SHOP -> 1 244 SKY at 1000:250, 50 bps fee ceil(25.015) = 26 SHOP
#         SHOP owes SKY      1 244 * 12 000 = 14 928 000
#         SHOP owes OPERATOR    26 * 3 333 =     86 658
#   (e)    200 SKY donated to AID:  SKY owes AID    200 * 12 000 = 2 400 000
#   (f)  1 507 SHOP donated to AID: SHOP owes AID 1 507 * 3 333 = 5 022 831

DAY_OBLIGATIONS = [
    Obligation("SKY", "HTL", 59_400_000),
    Obligation("SKY", "OPERATOR", 1_200_000),
    Obligation("SKY", "HTL", 5_936_000),
    Obligation("SKY", "OPERATOR", 120_000),
    Obligation("HTL", "SHOP", 9_899_010),
    Obligation("HTL", "OPERATOR", 88_000),
    Obligation("SHOP", "SKY", 14_928_000),
    Obligation("SHOP", "OPERATOR", 86_658),
    Obligation("SKY", "AID", 2_400_000),
    Obligation("SHOP", "AID", 5_022_831),
]

# Yesterday's carries, summing to zero: 4 000 - 3 000 - 2 500 + 1 500 = 0 (SHOP had none).
YESTERDAYS_CARRY = {"SKY": 4_000, "HTL": -3_000, "AID": -2_500, "OPERATOR": 1_500}


def test_gross_matrix_adds_up_what_each_owes_each() -> None:
    assert gross_matrix(DAY_OBLIGATIONS) == {
        ("HTL", "OPERATOR"): 88_000,
        ("HTL", "SHOP"): 9_899_010,
        ("SHOP", "AID"): 5_022_831,
        ("SHOP", "OPERATOR"): 86_658,
        ("SHOP", "SKY"): 14_928_000,
        ("SKY", "AID"): 2_400_000,
        ("SKY", "HTL"): 65_336_000,  # 59 400 000 + 5 936 000
        ("SKY", "OPERATOR"): 1_320_000,  # 1 200 000 + 120 000
    }


def test_net_positions_are_receipts_less_payments() -> None:
    # SKY      receives 14 928 000, pays 65 336 000 + 1 320 000 + 2 400 000 = 69 056 000
    # HTL      receives 65 336 000, pays  9 899 010 +    88 000             =  9 987 010
    # SHOP     receives  9 899 010, pays 14 928 000 +    86 658 + 5 022 831 = 20 037 489
    # AID      receives  2 400 000 + 5 022 831
    # OPERATOR receives  1 320 000 + 88 000 + 86 658
    # Check: -54 128 000 + 55 348 990 - 10 138 479 + 7 422 831 + 1 494 658 = 0
    assert net_positions(DAY_OBLIGATIONS) == {
        "AID": 7_422_831,
        "HTL": 55_348_990,
        "OPERATOR": 1_494_658,
        "SHOP": -10_138_479,
        "SKY": -54_128_000,
    }


def test_payouts_in_cents_and_carries_by_largest_remainder() -> None:
    # net + carry-in          floor in cents   remainder (micros)
    # AID       7 420 331        742              331
    # HTL      55 345 990       5534            5 990
    # OPERATOR  1 496 158        149            6 158
    # SHOP    -10 138 479      -1014            1 521
    # SKY     -54 124 000      -5413            6 000
    # Floors sum to -2 (remainders sum to 20 000 = 2 cents), so the two largest remainders,
    # OPERATOR (6 158) and SKY (6 000), are rounded up a cent; HTL (5 990) just misses.
    positions = settle_positions(net_positions(DAY_OBLIGATIONS), YESTERDAYS_CARRY, EUR_CENTS)

    assert positions == [
        Position("AID", 7_422_831, -2_500, payout_minor=742, carry_out_micros=331),
        Position("HTL", 55_348_990, -3_000, payout_minor=5_534, carry_out_micros=5_990),
        Position("OPERATOR", 1_494_658, 1_500, payout_minor=150, carry_out_micros=-3_842),
        Position("SHOP", -10_138_479, 0, payout_minor=-1_014, carry_out_micros=1_521),
        Position("SKY", -54_128_000, 4_000, payout_minor=-5_412, carry_out_micros=-4_000),
    ]
    # Payouts: 742 + 5 534 + 150 - 1 014 - 5 412 = 0.
    # Carries: 331 + 5 990 - 3 842 + 1 521 - 4 000 = 0. SKY pays 54.12 EUR of the
    # 54.124 EUR it owes and carries the last 4 000 micros into tomorrow.


def test_payment_instructions_match_largest_payers_to_largest_payees() -> None:
    positions = settle_positions(net_positions(DAY_OBLIGATIONS), YESTERDAYS_CARRY, EUR_CENTS)

    # Payers: SKY 5 412, SHOP 1 014. Payees: HTL 5 534, AID 742, OPERATOR 150.
    # SKY pays HTL 5 412 (HTL still due 122); SHOP pays HTL 122, AID 742, OPERATOR 150.
    assert payment_instructions(positions) == [
        PaymentInstruction("SKY", "HTL", 5_412),
        PaymentInstruction("SHOP", "HTL", 122),
        PaymentInstruction("SHOP", "AID", 742),
        PaymentInstruction("SHOP", "OPERATOR", 150),
    ]  # 4 payments for 5 participants


def test_equal_remainders_are_rounded_up_in_participant_order() -> None:
    # A pays 1 cent; B and C each receive half a cent: remainders 5 000 and 5 000, one cent to
    # hand out, B comes first.
    positions = settle_positions({"C": 5_000, "A": -10_000, "B": 5_000}, {}, EUR_CENTS)

    assert positions == [
        Position("A", -10_000, 0, payout_minor=-1, carry_out_micros=0),
        Position("B", 5_000, 0, payout_minor=1, carry_out_micros=-5_000),
        Position("C", 5_000, 0, payout_minor=0, carry_out_micros=5_000),
    ]


def test_participant_with_only_a_carry_in_is_settled_too() -> None:
    # CAFE had no business today but carried 7 000 micros: it is owed 1 cent, rounded up.
    positions = settle_positions({"A": -20_000, "B": 20_000}, {"CAFE": 7_000, "A": -7_000}, 2)

    assert positions == [
        Position("A", -20_000, -7_000, payout_minor=-3, carry_out_micros=3_000),
        Position("B", 20_000, 0, payout_minor=2, carry_out_micros=0),
        Position("CAFE", 0, 7_000, payout_minor=1, carry_out_micros=-3_000),
    ]


@pytest.mark.parametrize("exponent, unit", [(0, 1_000_000), (2, 10_000), (3, 1_000), (6, 1)])
def test_minor_units_for_each_exponent(exponent: int, unit: int) -> None:
    assert minor_unit_micros(exponent) == unit


def test_nothing_to_settle_gives_nothing() -> None:
    assert settle_positions({}, {}, EUR_CENTS) == []
    assert payment_instructions([]) == []
    assert net_positions([]) == {}
    assert gross_matrix([]) == {}


# --- properties --------------------------------------------------------------------------------

PARTICIPANT_IDS = ["AID", "BOOKS", "CAFE", "HTL", "OPERATOR", "RAIL", "SHOP", "SKY"]
amounts_micros = st.one_of(st.integers(1, 10**12), st.integers(1, 30_000))
minor_exponents = st.one_of(st.just(EUR_CENTS), st.integers(0, 6))


def obligations_among(participants: list[str]) -> st.SearchStrategy[list[Obligation]]:
    """Obligations between distinct participants of ``participants`` (two or more)."""
    count = len(participants)
    one = st.builds(
        lambda debtor, offset, amount: Obligation(
            participants[debtor], participants[(debtor + offset) % count], amount
        ),
        st.integers(0, count - 1),
        st.integers(1, count - 1),
        amounts_micros,
    )
    return st.lists(one, min_size=1, max_size=25)


@st.composite
def settlement_runs(
    draw: st.DrawFn, max_days: int = 10
) -> tuple[int, dict[str, int], list[list[Obligation]]]:
    """A minor exponent, zero-sum initial carries, and 1 to ``max_days`` days of obligations."""
    participants = draw(
        st.lists(st.sampled_from(PARTICIPANT_IDS), min_size=2, max_size=8, unique=True)
    )
    exponent = draw(minor_exponents)
    carries = draw(
        st.lists(
            st.integers(-(10**7), 10**7),
            min_size=len(participants) - 1,
            max_size=len(participants) - 1,
        )
    )
    initial_carry = dict(zip(participants, [*carries, -sum(carries)], strict=True))
    days = draw(st.lists(obligations_among(participants), min_size=1, max_size=max_days))
    return exponent, initial_carry, days


def assert_instructions_pay_out(positions: list[Position]) -> None:
    instructions = payment_instructions(positions)
    movers = [p for p in positions if p.payout_minor != 0]
    settled: Counter[str] = Counter()
    for instruction in instructions:
        assert instruction.amount_minor > 0
        assert instruction.payer != instruction.payee
        settled[instruction.payer] -= instruction.amount_minor
        settled[instruction.payee] += instruction.amount_minor

    assert len(instructions) <= max(len(movers) - 1, 0)
    assert {p.participant: p.payout_minor for p in movers} == {
        participant: amount for participant, amount in settled.items() if amount != 0
    }


@PROPERTY
@given(obligations=st.integers(2, 8).flatmap(lambda n: obligations_among(PARTICIPANT_IDS[:n])))
def test_nets_sum_to_zero_and_agree_with_the_gross_matrix(obligations: list[Obligation]) -> None:
    gross = gross_matrix(obligations)
    net = net_positions(obligations)

    assert sum(net.values()) == 0
    assert sum(gross.values()) == sum(o.amount_micros for o in obligations)
    for participant, amount in net.items():
        receives = sum(v for (_, creditor), v in gross.items() if creditor == participant)
        pays = sum(v for (debtor, _), v in gross.items() if debtor == participant)
        assert amount == receives - pays


@settings(PROPERTY, max_examples=500)
@given(run=settlement_runs())
def test_over_any_run_of_days_nothing_is_lost(
    run: tuple[int, dict[str, int], list[list[Obligation]]],
) -> None:
    exponent, initial_carry, days = run
    unit = minor_unit_micros(exponent)
    carry = initial_carry
    paid_micros: Counter[str] = Counter()
    netted_micros: Counter[str] = Counter()

    for obligations in days:
        net = net_positions(obligations)
        positions = settle_positions(net, carry, exponent)

        assert [p.participant for p in positions] == sorted(net.keys() | carry.keys())
        assert sum(p.payout_minor for p in positions) == 0
        assert sum(p.carry_out_micros for p in positions) == 0
        for position in positions:
            assert position.payout_minor * unit + position.carry_out_micros == (
                position.net_micros + position.carry_in_micros
            )
            assert -unit < position.carry_out_micros < unit
            paid_micros[position.participant] += position.payout_minor * unit
            netted_micros[position.participant] += position.net_micros
        assert_instructions_pay_out(positions)
        carry = {p.participant: p.carry_out_micros for p in positions}

    for participant in initial_carry:
        assert paid_micros[participant] + carry[participant] == (
            netted_micros[participant] + initial_carry[participant]
        )


@PROPERTY
@given(run=settlement_runs(max_days=1), data=st.data())
def test_same_input_in_any_order_gives_the_same_output(
    run: tuple[int, dict[str, int], list[list[Obligation]]], data: st.DataObject
) -> None:
    exponent, carry_in, days = run
    obligations = days[0]
    shuffled = data.draw(st.permutations(obligations))
    reordered_carry = dict(data.draw(st.permutations(list(carry_in.items()))))

    positions = settle_positions(net_positions(obligations), carry_in, exponent)
    shuffled_positions = settle_positions(net_positions(shuffled), reordered_carry, exponent)

    assert list(gross_matrix(shuffled).items()) == list(gross_matrix(obligations).items())
    assert list(net_positions(shuffled).items()) == list(net_positions(obligations).items())
    assert shuffled_positions == positions
    assert payment_instructions(data.draw(st.permutations(positions))) == (
        payment_instructions(positions)
    )


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "debtor, creditor, amount",
    [
        ("SKY", "SKY", 100),
        ("SKY", "HTL", 0),
        ("SKY", "HTL", -1),
        ("SKY", "HTL", True),
        ("SKY", "HTL", 1.5),
        ("SKY", "HTL", "100"),
        ("", "HTL", 100),
        (None, "HTL", 100),
    ],
)
def test_malformed_obligation_is_rejected(debtor: Any, creditor: Any, amount: Any) -> None:
    with pytest.raises(ValueError):
        Obligation(debtor, creditor, amount)


@pytest.mark.parametrize("exponent", [-1, 7, True, "2", None])
def test_unsupported_minor_exponent_is_rejected(exponent: Any) -> None:
    with pytest.raises(ValueError):
        settle_positions({"A": -1, "B": 1}, {}, exponent)


@pytest.mark.parametrize(
    "net, carry_in",
    [
        ({"A": -1, "B": 2}, {}),
        ({"A": -1, "B": 1}, {"A": 5}),
        ({"A": -1, "B": 1.0}, {}),
        ({"A": -1, "B": 1}, {"A": True, "B": -1}),
    ],
)
def test_nets_or_carries_that_do_not_balance_are_rejected(
    net: dict[str, Any], carry_in: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        settle_positions(net, carry_in, EUR_CENTS)


def test_instructions_for_unbalanced_or_duplicated_positions_are_rejected() -> None:
    with pytest.raises(ValueError):
        payment_instructions([Position("A", -10_000, 0, -1, 0)])
    with pytest.raises(ValueError):
        payment_instructions([Position("A", -10_000, 0, -1, 0), Position("A", 10_000, 0, 1, 0)])
