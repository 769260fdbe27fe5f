"""Multilateral netting: money owed, net positions, payouts in minor units, payment instructions.

Pure functions on integers, with no I/O and no floats (SPEC section 5). Money owed is in micros
(10**-6 of the major unit); payouts are in minor units of ``10**(6 - minor_exponent)`` micros
each (10 000 micros per cent for EUR, exponent 2; exponents 0 to 6 are supported).

Sign convention: a positive net or payout *receives*, a negative one *pays*.

What always holds
-----------------
- Net positions sum to zero: every micro one participant owes, another is owed.
- Per participant, ``payout_minor * unit + carry_out == net + carry_in``, to the micro.
  What rounding leaves stays in that participant's carry and comes back as tomorrow's
  carry-in, so over any run of days nothing is lost.
- Payouts sum to exactly zero, and so do the carries (given carry-ins that do).
- ``-unit < carry_out < unit``, whatever the carry-in (see :func:`settle_positions`).
- At most ``n - 1`` payment instructions for ``n`` participants with a non-zero payout.
- Everything is deterministic and independent of input order: participants are ordered by id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MICROS_EXPONENT = 6


@dataclass(frozen=True)
class Obligation:
    """``debtor`` owes ``creditor`` ``amount_micros`` (positive) micros."""

    debtor: str
    creditor: str
    amount_micros: int

    def __post_init__(self) -> None:
        for name in ("debtor", "creditor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty participant id")
        if self.debtor == self.creditor:
            raise ValueError(f"{self.debtor} cannot owe itself")
        if type(self.amount_micros) is not int or self.amount_micros <= 0:
            raise ValueError(
                f"amount_micros must be a positive integer, got {self.amount_micros!r}"
            )


@dataclass(frozen=True)
class Position:
    """One participant's settlement for a day (all money in micros except ``payout_minor``)."""

    participant: str
    net_micros: int
    carry_in_micros: int
    payout_minor: int
    carry_out_micros: int


@dataclass(frozen=True)
class PaymentInstruction:
    """``payer`` pays ``payee`` ``amount_minor`` (positive) minor units."""

    payer: str
    payee: str
    amount_minor: int


def gross_matrix(obligations: Iterable[Obligation]) -> dict[tuple[str, str], int]:
    """Total micros owed per ``(debtor, creditor)`` pair, keys in sorted order."""
    owed: defaultdict[tuple[str, str], int] = defaultdict(int)
    for obligation in obligations:
        owed[obligation.debtor, obligation.creditor] += obligation.amount_micros
    return dict(sorted(owed.items()))


def net_positions(obligations: Iterable[Obligation]) -> dict[str, int]:
    """Multilateral net in micros per participant (positive receives), sorted by id; sums to 0.

    Every participant named in an obligation appears, even one whose net is zero.
    """
    net: defaultdict[str, int] = defaultdict(int)
    for obligation in obligations:
        net[obligation.debtor] -= obligation.amount_micros
        net[obligation.creditor] += obligation.amount_micros
    return dict(sorted(net.items()))


def minor_unit_micros(minor_exponent: int) -> int:
    """Micros in one minor unit: 10 000 for an exponent of 2 (cents)."""
    if type(minor_exponent) is not int or not 0 <= minor_exponent <= MICROS_EXPONENT:
        raise ValueError(f"minor_exponent must be an integer in 0..6, got {minor_exponent!r}")
    unit: int = 10 ** (MICROS_EXPONENT - minor_exponent)
    return unit


def _require_zero_sum(name: str, amounts: Mapping[str, int]) -> None:
    for participant, amount in amounts.items():
        if type(amount) is not int:
            raise ValueError(f"{name} of {participant} must be an integer, got {amount!r}")
    if sum(amounts.values()) != 0:
        raise ValueError(f"{name} must sum to zero, got {sum(amounts.values())}")


def settle_positions(
    net: Mapping[str, int], carry_in: Mapping[str, int], minor_exponent: int
) -> list[Position]:
    """Round each participant's ``net + carry_in`` to a payout in minor units, sorted by id.

    Largest-remainder method. With ``unit`` micros per minor unit and ``total = net + carry_in``
    for each participant, start from ``floor(total / unit)`` and the remainder
    ``total - floor * unit``, in ``0..unit-1``. The totals sum to zero (nets and carry-ins each
    do, which is checked), so the remainders sum to ``k * unit`` where ``k = -sum(floors)``.
    Each remainder is below ``unit``, so ``k`` is 0 when every remainder is 0 and otherwise
    less than the number of non-zero remainders. The ``k`` participants with the largest
    remainders (ties by id) get one more minor unit, which makes the payouts sum to exactly
    zero, and only participants with a non-zero remainder are ever rounded up.
    ``carry_out = total - payout * unit`` is then the remainder (``0 <= carry_out < unit``) or,
    for a participant rounded up, the remainder minus ``unit`` (``-unit < carry_out < 0``).
    Hence ``|carry_out| < unit`` whatever the carry-in, and the carries sum to
    ``sum(totals) - unit * sum(payouts) == 0``.

    Participants with only a carry-in take part (with a net of zero).
    """
    unit = minor_unit_micros(minor_exponent)
    _require_zero_sum("net", net)
    _require_zero_sum("carry_in", carry_in)
    participants = sorted(net.keys() | carry_in.keys())
    totals = {p: net.get(p, 0) + carry_in.get(p, 0) for p in participants}
    payouts = {p: total // unit for p, total in totals.items()}
    deficit = -sum(payouts.values())
    by_remainder = sorted(participants, key=lambda p: (-(totals[p] - payouts[p] * unit), p))
    for participant in by_remainder[:deficit]:
        payouts[participant] += 1
    return [
        Position(
            participant=p,
            net_micros=net.get(p, 0),
            carry_in_micros=carry_in.get(p, 0),
            payout_minor=payouts[p],
            carry_out_micros=totals[p] - payouts[p] * unit,
        )
        for p in participants
    ]


def payment_instructions(positions: Iterable[Position]) -> list[PaymentInstruction]:
    """Who pays whom how many minor units so that every payout is met; deterministic.

    Greedy matching: payers in order of the largest payment first, payees of the largest
    receipt first, ties by participant id. Each instruction moves the smaller of what the
    current payer still pays and the current payee still receives, which finishes at least one
    of the two, and the last finishes both (payouts sum to zero), so ``n`` participants with a
    non-zero payout need at most ``n - 1`` instructions.
    """
    entries = list(positions)
    if len({position.participant for position in entries}) != len(entries):
        raise ValueError("each participant must appear once")
    if sum(position.payout_minor for position in entries) != 0:
        raise ValueError("payouts must sum to zero")
    payers = sorted(
        (p for p in entries if p.payout_minor < 0), key=lambda p: (p.payout_minor, p.participant)
    )
    payees = sorted(
        (p for p in entries if p.payout_minor > 0), key=lambda p: (-p.payout_minor, p.participant)
    )
    owing = [-payer.payout_minor for payer in payers]
    due = [payee.payout_minor for payee in payees]
    instructions: list[PaymentInstruction] = []
    i = j = 0
    while i < len(payers):
        amount = min(owing[i], due[j])
        instructions.append(
            PaymentInstruction(
                payer=payers[i].participant, payee=payees[j].participant, amount_minor=amount
            )
        )
        owing[i] -= amount
        due[j] -= amount
        if owing[i] == 0:
            i += 1
        if due[j] == 0:
            j += 1
    return instructions


def pair_legs(amounts: Mapping[str, int]) -> list[Obligation]:
    """Who owes whom within one transaction, from each participant's net leg on the money ledger.

    ``amounts`` (participant -> signed micros, summing to zero; zeros ignored) is what each
    participant's settlement accounts moved: negative owes, positive is owed. The exchange's own
    transactions always have one side with a single participant: a conversion's source brand
    owes the destination brand and the operator, a donation's brand owes the charity, and a
    reversal flips them. Then that participant owes (or is owed by) each one on the other side
    exactly its leg. Should both sides ever have several participants, they are paired greedily
    in participant order: the first debtor pays the first creditor what the smaller of the two
    still has, and so on, which finishes one of them at each step (at most ``d + c - 1``
    obligations). Every participant's obligations sum to its leg either way.
    """
    _require_zero_sum("amounts", amounts)
    debtors = sorted((p, -a) for p, a in amounts.items() if a < 0)
    creditors = sorted((p, a) for p, a in amounts.items() if a > 0)
    if len(debtors) == 1:
        return [Obligation(debtors[0][0], creditor, a) for creditor, a in creditors]
    if len(creditors) == 1:
        return [Obligation(debtor, creditors[0][0], a) for debtor, a in debtors]
    owing = [a for _, a in debtors]
    due = [a for _, a in creditors]
    pairs: list[Obligation] = []
    i = j = 0
    while i < len(debtors):
        amount = min(owing[i], due[j])
        pairs.append(Obligation(debtors[i][0], creditors[j][0], amount))
        owing[i] -= amount
        due[j] -= amount
        if owing[i] == 0:
            i += 1
        if due[j] == 0:
            j += 1
    return pairs
