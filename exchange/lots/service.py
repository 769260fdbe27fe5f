"""Expiry policies, expiry runs, liability and breakage: the service other code calls (the
controllers, the operator's CLI, the console).

Every function but :func:`run_expiry` works inside the caller's database transaction and never
commits; :func:`run_expiry` opens one transaction per chunk of members
(``exchange.ledger.lot_expiry``).

Liability. A brand's points outstanding at ``T`` are its members' balances then: minus the
balances of its issuance and breakage accounts (its points ledger sums to zero), read from the
last posting of each of those accounts before ``T``, a few index probes. Their value is
``points * micros_per_point`` of the point value in force at ``T``. Breakage in ``[from, to)``
is what the breakage account received then, each part valued at the point value in force when
it expired: exact integers, no rounding.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.contract.lots import (
    BreakageOut,
    ExpiryPoliciesOut,
    ExpiryPolicyOut,
    ExpiryRunOut,
    LiabilityOut,
)
from exchange.errors import InvalidInput
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.members import brand_currency
from exchange.ledger.models import Account, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.policies import PolicyTerms, policy_versions, set_policy
from exchange.pricing.models import PointValue
from exchange.settings import Settings
from settlement.calendar import BusinessCalendar, last_complete_day

account_t = cast(Table, Account.__table__)
posting_t = cast(Table, Posting.__table__)
point_value_t = cast(Table, PointValue.__table__)


def _policy_out(terms: PolicyTerms, currency: str) -> ExpiryPolicyOut:
    return ExpiryPolicyOut(
        id=terms.id,
        currency=currency,
        kind=terms.kind,  # type: ignore[arg-type]
        period=terms.period,
        effective_at=terms.effective_at,
        created_at=terms.created_at,
    )


async def set_expiry_policy(
    session: AsyncSession,
    brand: PartnerInfo,
    kind: str,
    period: int | None,
    effective_at: dt.datetime | None = None,
) -> ExpiryPolicyOut:
    """A new version of the brand's expiry policy, now or later."""
    currency = brand_currency(brand)
    terms = await set_policy(session, brand.id, kind, period, effective_at=effective_at)
    return _policy_out(terms, currency)


async def expiry_policies(
    session: AsyncSession, brand: PartnerInfo, at: dt.datetime | None = None
) -> ExpiryPoliciesOut:
    """The brand's policy in force at ``at`` (default now) and every version."""
    currency = brand_currency(brand)
    now = at or utcnow()
    versions = [_policy_out(terms, currency) for terms in await policy_versions(session, brand.id)]
    in_force = [version for version in versions if version.effective_at <= now]
    return ExpiryPoliciesOut(in_force=in_force[-1] if in_force else None, versions=versions)


async def run_expiry(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    business_date: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ExpiryRunOut:
    """Expire every lot due by the cutoff of ``business_date`` (default: the last business day
    that has ended), and send the notices of the ``EXCHANGE_EXPIRY_NOTICE_DAYS`` after it. A
    day whose cutoff has not come is refused."""
    calendar = BusinessCalendar.from_settings(settings)
    now = now or utcnow()
    day = business_date or last_complete_day(calendar, now)
    cutoff = calendar.cutoff_at(day)
    if cutoff > now:
        raise InvalidInput(f"business day {day.isoformat()} has not ended", field="date")
    totals = await expire_lots(sessions, cutoff, notice_days=settings.expiry_notice_days)
    return ExpiryRunOut(
        cutoff=cutoff, members=totals.members, points=totals.points, notices=totals.notices
    )


async def _balance_before(session: AsyncSession, brand: PartnerInfo, kind: str, at: Any) -> int:
    """The sum of the brand's ``kind`` accounts' balances just before ``at``."""
    last = (
        select(posting_t.c.balance_after)
        .where(posting_t.c.account_id == account_t.c.id, posting_t.c.created_at < at)
        .order_by(posting_t.c.seq.desc())
        .limit(1)
        .correlate(account_t)
        .scalar_subquery()
    )
    total = await session.scalar(
        select(func.coalesce(func.sum(last), 0)).where(
            account_t.c.partner_id == brand.id, account_t.c.kind == kind
        )
    )
    return int(total or 0)


async def _expired_between(
    session: AsyncSession, brand: PartnerInfo, start: dt.datetime, end: dt.datetime
) -> int:
    if start >= end:
        return 0
    total = await session.scalar(
        select(func.coalesce(func.sum(posting_t.c.amount), 0))
        .join(account_t, account_t.c.id == posting_t.c.account_id)
        .where(
            account_t.c.partner_id == brand.id,
            account_t.c.kind == "breakage",
            posting_t.c.created_at >= start,
            posting_t.c.created_at < end,
        )
    )
    return int(total or 0)


async def breakage(
    session: AsyncSession, brand: PartnerInfo, from_at: dt.datetime, to_at: dt.datetime
) -> BreakageOut:
    """Points the brand's members lost to expiry in ``[from_at, to_at)`` and their value."""
    versions = (
        await session.execute(
            select(point_value_t.c.effective_at, point_value_t.c.micros_per_point)
            .where(point_value_t.c.partner_id == brand.id)
            .order_by(point_value_t.c.effective_at)
        )
    ).all()
    first = versions[0].effective_at if versions else to_at
    unvalued = await _expired_between(session, brand, from_at, min(first, to_at))
    points, value = unvalued, 0
    for index, (effective_at, micros) in enumerate(versions):
        ends = versions[index + 1].effective_at if index + 1 < len(versions) else to_at
        expired = await _expired_between(
            session, brand, max(from_at, effective_at), min(to_at, ends)
        )
        points += expired
        value += expired * micros
    return BreakageOut(
        from_at=from_at, to_at=to_at, points=points, value_micros=value, unvalued_points=unvalued
    )


async def liability(
    session: AsyncSession,
    brand: PartnerInfo,
    settlement_currency: str,
    *,
    at: dt.datetime | None = None,
    from_at: dt.datetime | None = None,
    to_at: dt.datetime | None = None,
) -> LiabilityOut:
    """The brand's points outstanding at ``at`` (default now) and their value, and its
    breakage in ``[from_at, to_at)`` (default: from the start of ``at``'s month, UTC, to
    ``at``)."""
    currency = brand_currency(brand)
    at = at or utcnow()
    to_at = to_at or at
    from_at = from_at or at.astimezone(dt.UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    if from_at > to_at:
        raise InvalidInput("from must not be after to", field="from")
    outstanding = -(
        await _balance_before(session, brand, "issuance", at)
        + await _balance_before(session, brand, "breakage", at)
    )
    micros = await session.scalar(
        select(point_value_t.c.micros_per_point)
        .where(point_value_t.c.partner_id == brand.id, point_value_t.c.effective_at <= at)
        .order_by(point_value_t.c.effective_at.desc())
        .limit(1)
    )
    return LiabilityOut(
        currency=currency,
        at=at,
        points_outstanding=outstanding,
        micros_per_point=micros,
        value_micros=None if micros is None else outstanding * micros,
        breakage=await breakage(session, brand, from_at, to_at),
        settlement_currency=settlement_currency,
    )
