"""What an order earns, and what a return takes back: exact integers, no I/O.

The rule (the README's "Purchases and earn rules" says the same):

* A rule version has, per money currency, a rate of ``points`` per ``per_minor_units`` minor
  units spent (1 point per euro: 1 per 100 cents). An order in a currency it has no rate for
  earns nothing: it is refused (``currency-not-earning``).
* Each line gets three multipliers in basis points (10 000 = 1x): its product type's, its
  category's (10 000 when the version names none), and the promotion in force at the order's
  time that matches its category and product type (a promotion naming neither matches every
  line; of several, the greatest applies, they do not stack with each other; none: 10 000).
* A line earns ``floor(amount * points * type_bps * category_bps * promotion_bps /
  (per_minor_units * 10 000^3))``: the exact rational product, rounded down once, per line
  (never in the member's favour by a fraction; a line's rounding never moves another's).
* The order earns the sum of its lines. With a cap below that sum, each line keeps
  ``floor(line * cap / sum)`` and the points still missing to reach the cap go one each to the
  lines with the largest remainders (ties: the earlier line): the lines then sum to exactly
  the cap, and no line earns more than it would uncapped.
* A return of ``q`` more units of a line of quantity ``Q`` that earned ``P`` points, ``r`` of
  them returned before, takes back ``floor(P * (r + q) / Q) - floor(P * r / Q)``: cumulative
  floors, so the returns of a whole line take back exactly ``P``, never more, and what the
  returns of an order take back never exceeds what it earned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exchange.errors import CurrencyNotEarning

BPS = 10_000
"""One, in basis points."""


@dataclass(frozen=True)
class Rate:
    points: int
    per_minor_units: int


@dataclass(frozen=True)
class PromotionTerms:
    multiplier_bps: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    category: str | None = None
    product_type: str | None = None

    def applies(self, line: Line, at: dt.datetime) -> bool:
        """In force at ``at`` (start included, end excluded) and matching the line."""
        return (
            self.starts_at <= at < self.ends_at
            and self.category in (None, line.category)
            and self.product_type in (None, line.product_type)
        )


@dataclass(frozen=True)
class EarnRules:
    rates: Mapping[str, Rate]
    """By money currency (ISO 4217)."""
    product_types: Mapping[str, int]
    categories: Mapping[str, int]
    promotions: Sequence[PromotionTerms] = ()
    order_cap: int | None = None


@dataclass(frozen=True)
class Line:
    sku: str
    product_type: str
    category: str
    amount_minor: int
    quantity: int = 1


@dataclass(frozen=True)
class LineEarn:
    product_type_bps: int
    category_bps: int
    promotion_bps: int
    points: int
    """After the order's cap."""


@dataclass(frozen=True)
class OrderEarn:
    lines: tuple[LineEarn, ...]
    capped: bool

    @property
    def points(self) -> int:
        return sum(line.points for line in self.lines)


def promotion_bps(rules: EarnRules, line: Line, at: dt.datetime) -> int:
    """The greatest promotion in force at ``at`` that matches the line; 1x when none does."""
    return max(
        (p.multiplier_bps for p in rules.promotions if p.applies(line, at)),
        default=BPS,
    )


def line_points(rate: Rate, amount_minor: int, *multipliers_bps: int) -> int:
    """``amount * rate * every multiplier``, rounded down once (exact integers)."""
    numerator = amount_minor * rate.points
    denominator = rate.per_minor_units
    for multiplier in multipliers_bps:
        numerator *= multiplier
        denominator *= BPS
    return numerator // denominator


def capped(points: Sequence[int], cap: int | None) -> list[int]:
    """The lines' ``points`` cut down to sum to ``cap`` (largest remainder, ties to the earlier
    line), or as they are when they do not exceed it."""
    total = sum(points)
    if cap is None or total <= cap:
        return list(points)
    shares = [p * cap // total for p in points]
    missing = cap - sum(shares)
    by_remainder = sorted(range(len(points)), key=lambda i: (-(points[i] * cap % total), i))
    for index in by_remainder[:missing]:
        shares[index] += 1
    return shares


def order_earn(
    rules: EarnRules, currency: str, lines: Sequence[Line], at: dt.datetime
) -> OrderEarn:
    """What an order of ``lines`` in ``currency``, made at ``at``, earns under ``rules``."""
    rate = rules.rates.get(currency)
    if rate is None:
        raise CurrencyNotEarning(
            f"the earn rules in force have no rate for {currency}",
            currency=currency,
            currencies=sorted(rules.rates),
        )
    multipliers = [
        (
            rules.product_types.get(line.product_type, BPS),
            rules.categories.get(line.category, BPS),
            promotion_bps(rules, line, at),
        )
        for line in lines
    ]
    raw = [
        line_points(rate, line.amount_minor, *bps)
        for line, bps in zip(lines, multipliers, strict=True)
    ]
    final = capped(raw, rules.order_cap)
    return OrderEarn(
        lines=tuple(
            LineEarn(*bps, points=points) for bps, points in zip(multipliers, final, strict=True)
        ),
        capped=final != raw,
    )


def returned_points(points: int, quantity: int, before: int, after: int) -> int:
    """Points a return takes back from a line of ``quantity`` units that earned ``points``, as
    its returned units go from ``before`` to ``after`` (cumulative floors)."""
    if not 0 <= before <= after <= quantity:
        raise ValueError("returned units out of range")
    return points * after // quantity - points * before // quantity
