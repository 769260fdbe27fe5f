"""Expiry policies, liability and breakage over the signed API, and the figures the operator's
report and console show.

Points are integers, money is in micros of the settlement currency; times are RFC 3339 in UTC.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

ExpiryKind = Literal["never", "months", "quarters", "activity"]


class ExpiryPolicyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new version of the calling brand's expiry policy.

    ``never``: points do not expire (no ``period``). ``months``: a lot expires ``period``
    calendar months after it was credited. ``quarters``: at the end of the ``period``-th
    calendar quarter (UTC), the quarter it was credited in counting as the first.
    ``activity``: ``period`` months after the member's last earn; every earn extends all of the
    member's points."""

    kind: ExpiryKind
    period: Annotated[int, msgspec.Meta(ge=1, le=1200)] | None = None
    effective_at: dt.datetime | None = None
    """From when (RFC 3339, now or later; default now)."""


class ExpiryPolicyOut(msgspec.Struct):
    id: uuid.UUID
    currency: str
    kind: ExpiryKind
    period: int | None
    effective_at: dt.datetime
    created_at: dt.datetime


class ExpiryPoliciesOut(msgspec.Struct):
    """The version in force now (``None``: points do not expire) and every version."""

    in_force: ExpiryPolicyOut | None
    versions: list[ExpiryPolicyOut]


class BreakageOut(msgspec.Struct):
    """Points expired in ``[from_at, to_at)`` and their value, each expiry valued at the brand's
    point value in force when it expired (points expired while no value was in force are in
    ``unvalued_points``)."""

    from_at: dt.datetime
    to_at: dt.datetime
    points: int
    value_micros: int
    unvalued_points: int


class LiabilityOut(msgspec.Struct):
    """A brand's points outstanding at ``at`` (its members' balances) and their value then
    (``None`` when no point value was in force), with the breakage of a period."""

    currency: str
    at: dt.datetime
    points_outstanding: int
    micros_per_point: int | None
    value_micros: int | None
    breakage: BreakageOut
    settlement_currency: str


class ExpiryRunOut(msgspec.Struct):
    """What an expiry run did: lots due by ``cutoff`` expired, notices queued."""

    cutoff: dt.datetime
    members: int
    points: int
    notices: int
