"""Conversion arithmetic: fees, points out, money owed and reversal shares.

Pure functions on integers, with no I/O and no floats (SPEC section 2). A conversion of ``P``
source points under a rate of ``to_points`` per ``from_points`` with ``fee_bps``:

    fee       = ceil(P * fee_bps / 10000)
    converted = P - fee
    out       = floor(converted * to_points / from_points)

Rounding rules
--------------
- The fee rounds **up**, in the operator's favour: a fee of 1 bps on 1 point is 1 point.
- The points out round **down**: the member never receives a fraction of a point that the
  converted source points did not pay for. ``fee + converted == P`` always, so the member is
  debited exactly ``P`` and nothing is created or lost on the source side.
- Money is exact: points times a per-point value in micros, never rounded.
- Reversals are proportional and use **cumulative floors**. Once a cumulative ``r`` of the ``P``
  source points has been reversed, a leg ``L`` of the conversion (``out``, ``fee``, a money leg)
  has been reversed by ``floor(L * r / P)`` in total, and one partial reversal reverses the
  difference between that cumulative share after it and before it. Each partial share is
  non-negative, their running total never exceeds ``L``, and it is exactly ``L`` once ``r``
  reaches ``P``, whatever the split. The member's source leg is ``P`` itself, so reversing
  ``r`` points credits the member back exactly ``r``; the destination debit
  (``floor(out * r / P)`` cumulatively) rounds in the member's favour, the fee refund in the
  operator's. Where two legs must balance (fee and converted make up ``r``), compute one with
  :func:`cumulative_share` and the other as the difference, so the postings still balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exchange.contract.types import MAX_POINTS

MIN_POINTS = 1
BPS_PER_UNIT = 10_000

RefusalReason = Literal["below-minimum", "zero-output"]


class ConversionRefused(Exception):
    """A well-formed conversion the rate does not allow (a 422 for the caller).

    ``reason`` is ``"below-minimum"`` when ``points < min_points`` and ``"zero-output"`` when
    the member would receive no destination points at all.
    """

    def __init__(self, reason: RefusalReason, *, points: int, min_points: int) -> None:
        self.reason: RefusalReason = reason
        self.points = points
        self.min_points = min_points
        super().__init__(f"conversion of {points} points refused: {reason}")


def _require_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) in ``low..high``, else raise ValueError."""
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f"..{high}"
        raise ValueError(f"{name} must be in {low}{upper}, got {value}")
    return value


def _require_points(points: object) -> int:
    return _require_int("points", points, low=MIN_POINTS, high=MAX_POINTS)


@dataclass(frozen=True)
class RateTerms:
    """The terms of one rate version: ``to_points`` per ``from_points``, a fee and a minimum."""

    from_points: int
    to_points: int
    fee_bps: int
    min_points: int

    def __post_init__(self) -> None:
        _require_int("from_points", self.from_points, low=1)
        _require_int("to_points", self.to_points, low=1)
        _require_int("fee_bps", self.fee_bps, low=0, high=BPS_PER_UNIT)
        _require_int("min_points", self.min_points, low=0)


@dataclass(frozen=True)
class ConversionAmounts:
    """Points moved by one conversion.

    The member is debited ``points`` (= ``fee`` + ``converted``) and credited ``out``.
    """

    points: int
    fee: int
    converted: int
    out: int

    def __post_init__(self) -> None:
        _require_points(self.points)
        _require_int("fee", self.fee, low=0, high=self.points)
        _require_int("out", self.out, low=0)
        if self.converted != self.points - self.fee:
            raise ValueError("converted must equal points - fee")


@dataclass(frozen=True)
class ConversionMoney:
    """Money owed for one conversion, in micros.

    The source brand owes the destination brand ``destination_micros`` and the operator
    ``operator_fee_micros``.
    """

    destination_micros: int
    operator_fee_micros: int


def conversion_amounts(points: int, terms: RateTerms) -> ConversionAmounts:
    """Split ``points`` source points into fee and converted points, and compute the points out.

    Raises ValueError for an amount outside 1..10**12 or not an int, and ConversionRefused when
    ``points < terms.min_points`` (checked first) or when ``out`` would be 0.
    """
    _require_points(points)
    if points < terms.min_points:
        raise ConversionRefused("below-minimum", points=points, min_points=terms.min_points)
    fee = -(-(points * terms.fee_bps) // BPS_PER_UNIT)  # ceiling division
    converted = points - fee
    out = converted * terms.to_points // terms.from_points
    if out == 0:
        raise ConversionRefused("zero-output", points=points, min_points=terms.min_points)
    return ConversionAmounts(points=points, fee=fee, converted=converted, out=out)


def money_micros(points: int, value_micros_per_point: int) -> int:
    """The exact value in micros of ``points`` points worth ``value_micros_per_point`` each."""
    _require_int("points", points, low=0)
    _require_int("value_micros_per_point", value_micros_per_point, low=0)
    return points * value_micros_per_point


def conversion_money(
    amounts: ConversionAmounts, source_value_micros: int, destination_value_micros: int
) -> ConversionMoney:
    """Money owed for a conversion: ``out * value(destination)`` and ``fee * value(source)``."""
    return ConversionMoney(
        destination_micros=money_micros(amounts.out, destination_value_micros),
        operator_fee_micros=money_micros(amounts.fee, source_value_micros),
    )


def cumulative_share(leg: int, total: int, cumulative: int) -> int:
    """How much of ``leg`` is reversed once ``cumulative`` of ``total`` source points are: floor.

    ``cumulative_share(leg, total, 0) == 0`` and ``cumulative_share(leg, total, total) == leg``,
    and it never decreases as ``cumulative`` grows, so a partial reversal's leg,
    ``cumulative_share(after) - cumulative_share(before)``, is never negative and all of them
    together add up to exactly ``leg``.
    """
    _require_int("leg", leg, low=0)
    _require_int("total", total, low=1)
    _require_int("cumulative", cumulative, low=0, high=total)
    return leg * cumulative // total


def reversal_share(
    original: int, original_total: int, reversed_points: int, *, already_reversed: int = 0
) -> int:
    """The part of leg ``original`` to reverse when ``reversed_points`` more source points are.

    ``original_total`` is the conversion's source points ``P`` and ``already_reversed`` the
    source points reversed by earlier partial reversals. The share is
    ``cumulative_share(after) - cumulative_share(before)`` (see the module notes): on a first or
    only reversal it is ``floor(original * reversed_points / P)``, on a full one exactly
    ``original``, and however a conversion is reversed in parts, the parts sum to ``original``.
    """
    _require_int("original_total", original_total, low=1)
    _require_int("already_reversed", already_reversed, low=0, high=original_total)
    _require_int("reversed_points", reversed_points, low=0, high=original_total - already_reversed)
    after = cumulative_share(original, original_total, already_reversed + reversed_points)
    return after - cumulative_share(original, original_total, already_reversed)
