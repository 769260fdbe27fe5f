"""How the console writes numbers: exactly. Template filters, registered on the Jinja
environment by :func:`register`.

Nothing is rounded: money in micros is written in the settlement currency's major unit with as
many decimals as it takes (at least the currency's minor digits, at most six), so
``12_345_678`` micros of EUR is ``12.345678`` and ``12_000_000`` is ``12.00``; a payout in minor
units is written with the minor digits; a ratio in basis points as a percentage with two
decimals (a basis point is exactly 0.01 %)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from exchange.base import rfc3339


def points(value: int) -> str:
    """``1234567`` as ``1,234,567``."""
    return f"{value:,}"


def money(micros: int, minor_exponent: int = 2) -> str:
    """Micros as the major unit, exact (see the module's note)."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    digits = f"{fraction:06d}".rstrip("0")
    digits = digits.ljust(min(minor_exponent, 6), "0")
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "")


def minor(amount: int, minor_exponent: int = 2) -> str:
    """Minor units (cents) as the major unit: ``-12345`` with 2 digits is ``-123.45``."""
    if minor_exponent == 0:
        return f"{amount:,}"
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**minor_exponent)
    return f"{sign}{whole:,}.{fraction:0{minor_exponent}d}"


def percent(basis_points: int) -> str:
    """Basis points as a percentage: ``1234`` is ``12.34 %``."""
    whole, fraction = divmod(basis_points, 100)
    return f"{whole}.{fraction:02d} %"


def moment(value: dt.datetime | None) -> str:
    """A time as RFC 3339 in UTC, to the second."""
    if value is None:
        return ""
    return rfc3339(value.replace(microsecond=0))


def register(environment: Any) -> None:
    environment.filters.update(
        points=points, money=money, minor=minor, percent=percent, moment=moment
    )
