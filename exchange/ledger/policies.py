"""Brands' expiry policies: the arithmetic of a lot's expiry (pure), the version in force, and a
new version.

Policies are effective-dated and immutable like point values: the version in force at ``T`` is
the one with the greatest ``effective_at <= T``, a new one takes effect now or later (never in
the past, which would change the expiry lots were opened with), and none is changed. A brand
without a policy in force keeps its points for ever.

Expiry arithmetic, in UTC, exact to the microsecond:

* ``months`` N and ``activity`` N: the same day of the month and time of day N calendar months
  later; a day the target month lacks is its last day (31 January + 1 month = 28 or 29 February).
* ``quarters`` N: the first instant of the N-th quarter after the one the lot was opened in,
  that is the end of the N-th quarter counting the opening quarter as the first (opened on
  5 May, ``quarters`` 1: expires at 1 July 00:00; ``quarters`` 4: at 1 April next year).
* ``never``: :data:`NEVER`, later than every other expiry, so that the consumption order
  (oldest expiry first) takes non-expiring points last.
"""

from __future__ import annotations

import calendar
import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.errors import EffectiveInPast, InvalidInput, VersionConflict
from exchange.ledger.lot_models import EXPIRY_KINDS, ExpiryPolicy

NEVER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
"""The expiry of points that do not expire."""
MAX_PERIOD = 1200
"""Months or quarters a policy may name, at most (a hundred years of months)."""

policy_t = cast(Table, ExpiryPolicy.__table__)


@dataclass(frozen=True)
class PolicyTerms:
    """One version of a brand's policy."""

    id: uuid.UUID
    partner_id: uuid.UUID
    kind: str
    period: int | None
    effective_at: dt.datetime
    created_at: dt.datetime

    @property
    def extends_on_earn(self) -> bool:
        return self.kind == "activity"


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """``moment`` plus ``months`` calendar months, the day clamped to the target month's last."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    if year > NEVER.year - 1:
        return NEVER
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def quarter_end(moment: dt.datetime, quarters: int) -> dt.datetime:
    """The first instant (UTC) of the ``quarters``-th quarter after ``moment``'s."""
    index = moment.year * 4 + (moment.month - 1) // 3 + quarters
    year, quarter = divmod(index, 4)
    if year > NEVER.year - 1:
        return NEVER
    return dt.datetime(year, quarter * 3 + 1, 1, tzinfo=dt.UTC)


def lot_expiry(policy: PolicyTerms | None, opened_at: dt.datetime) -> dt.datetime:
    """When a lot opened at ``opened_at`` under ``policy`` expires (see the module note)."""
    if policy is None or policy.kind == "never" or policy.period is None:
        return NEVER
    moment = opened_at.astimezone(dt.UTC)
    if policy.kind == "quarters":
        return quarter_end(moment, policy.period)
    return add_months(moment, policy.period)


def _terms(row: Any) -> PolicyTerms:
    return PolicyTerms(
        row.id, row.partner_id, row.kind, row.period, row.effective_at, row.created_at
    )


# Built once: the engine reads it for every group that opens lots, and building the statement
# (and its cache key) cost more than running it.
_LATEST = (
    select(policy_t.c.partner_id, func.max(policy_t.c.effective_at).label("effective_at"))
    .where(
        policy_t.c.partner_id.in_(bindparam("partner_ids", expanding=True)),
        policy_t.c.effective_at <= bindparam("at"),
    )
    .group_by(policy_t.c.partner_id)
    .subquery()
)
_IN_FORCE = select(policy_t).join(
    _LATEST,
    (_LATEST.c.partner_id == policy_t.c.partner_id)
    & (_LATEST.c.effective_at == policy_t.c.effective_at),
)


async def policies_in_force(
    session: AsyncSession, partner_ids: Collection[uuid.UUID], at: dt.datetime
) -> dict[uuid.UUID, PolicyTerms]:
    """The version in force at ``at`` of each brand that has one: one query."""
    if not partner_ids:
        return {}
    rows = await session.execute(_IN_FORCE, {"partner_ids": sorted(partner_ids), "at": at})
    return {row.partner_id: _terms(row) for row in rows}


async def policy_versions(session: AsyncSession, partner_id: uuid.UUID) -> list[PolicyTerms]:
    """Every version of a brand's policy, oldest first."""
    rows = await session.execute(
        select(policy_t)
        .where(policy_t.c.partner_id == partner_id)
        .order_by(policy_t.c.effective_at)
    )
    return [_terms(row) for row in rows]


def check_policy(kind: object, period: object) -> tuple[str, int | None]:
    """A policy's kind and period as the table takes them; ``invalid-input`` otherwise."""
    if kind not in EXPIRY_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(EXPIRY_KINDS)}", field="kind")
    if kind == "never":
        if period is not None:
            raise InvalidInput("a policy of kind never has no period", field="period")
        return "never", None
    if type(period) is not int or not 1 <= period <= MAX_PERIOD:
        raise InvalidInput(f"period must be a whole number from 1 to {MAX_PERIOD}", field="period")
    return str(kind), period


async def set_policy(
    session: AsyncSession,
    partner_id: uuid.UUID,
    kind: object,
    period: object,
    *,
    effective_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> PolicyTerms:
    """A new version of the brand's policy, in force from ``effective_at`` (default now; never
    in the past)."""
    kind, period = check_policy(kind, period)
    now = now or utcnow()
    effective = now if effective_at is None else effective_at.astimezone(dt.UTC)
    if effective_at is not None and effective_at.tzinfo is None:
        raise InvalidInput("effective_at needs a time zone", field="effective_at")
    if effective < now:
        raise EffectiveInPast(
            f"effective_at {effective.isoformat()} is before now ({now.isoformat()})",
            field="effective_at",
        )
    terms = PolicyTerms(uuid7(), partner_id, kind, period, effective, now)
    try:
        async with session.begin_nested():
            await session.execute(
                insert(policy_t).values(
                    id=terms.id,
                    partner_id=partner_id,
                    kind=kind,
                    period=period,
                    effective_at=effective,
                    created_at=now,
                )
            )
    except IntegrityError as exc:
        raise VersionConflict("the expiry policy already has a version taking effect then") from exc
    return terms
