"""What a request's amounts and member refs must be, checked before anything is read."""

from __future__ import annotations

from exchange.contract.types import MAX_MEMBER_REF, MAX_POINTS
from exchange.errors import InvalidAmount, InvalidInput


def check_points(points: object, field: str = "points") -> int:
    """A request amount: a whole number from 1 to 10^12 (a bool is not a number here)."""
    if type(points) is not int or not 1 <= points <= MAX_POINTS:
        raise InvalidAmount(f"{field} must be a whole number from 1 to {MAX_POINTS}", field=field)
    return points


def check_member_ref(member_ref: object, field: str = "member_ref") -> str:
    """A member's ref: printable, no outer spaces and no ``/`` (it is a path segment)."""
    if (
        not isinstance(member_ref, str)
        or not 1 <= len(member_ref) <= MAX_MEMBER_REF
        or not member_ref.isprintable()
        or "/" in member_ref
        or member_ref != member_ref.strip()
    ):
        raise InvalidInput(
            f"{field} must be 1 to {MAX_MEMBER_REF} printable characters, no outer spaces, no '/'",
            field=field,
        )
    return member_ref
