"""A brand's earn rules: effective-dated versions, never changed (a new one supersedes).

Every function works inside the caller's database transaction and never commits. The version
in force at a time ``T`` is the brand's one with the greatest ``effective_at <= T``; a new
version takes effect now or later, never earlier, which would reprice purchases already made.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

import msgspec
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.contract.purchases import EarnRulesCreate, EarnRulesOut, EarnRulesPage
from exchange.errors import EarnRulesNotFound, EffectiveInPast, InvalidInput, VersionConflict
from exchange.ledger.members import brand_currency
from exchange.ledger.parties import PartnerInfo
from exchange.pricing.service import moment_of
from exchange.purchases.arithmetic import EarnRules, PromotionTerms, Rate
from exchange.purchases.models import EarnRuleVersion

earn_rule_version_t = cast(Table, EarnRuleVersion.__table__)

_STORED = msgspec.json.Decoder(EarnRulesCreate)


class _Row(msgspec.Struct):
    """A version's row, as written."""

    id: uuid.UUID
    partner_id: uuid.UUID
    rules: str
    effective_at: dt.datetime
    created_at: dt.datetime


def _check(body: EarnRulesCreate) -> None:
    """What the body's types cannot say: each currency once, promotions that end after they
    start."""
    currencies = [rate.currency for rate in body.rates]
    if len(set(currencies)) != len(currencies):
        raise InvalidInput("each currency has one rate", field="rates")
    for index, promotion in enumerate(body.promotions):
        if promotion.ends_at <= promotion.starts_at:
            raise InvalidInput(
                "a promotion ends after it starts", field=f"promotions[{index}].ends_at"
            )


def _out(row: Any) -> EarnRulesOut:
    body = _STORED.decode(row.rules)
    return EarnRulesOut(
        id=row.id,
        partner_id=row.partner_id,
        rates=body.rates,
        product_type_multipliers_bps=body.product_type_multipliers_bps,
        category_multipliers_bps=body.category_multipliers_bps,
        promotions=body.promotions,
        order_cap=body.order_cap,
        effective_at=row.effective_at,
        created_at=row.created_at,
    )


def earn_rules(version: EarnRulesOut) -> EarnRules:
    """A version as the arithmetic takes it."""
    return EarnRules(
        rates={r.currency: Rate(r.points, r.per_minor_units) for r in version.rates},
        product_types=version.product_type_multipliers_bps,
        categories=version.category_multipliers_bps,
        promotions=tuple(
            PromotionTerms(
                multiplier_bps=p.multiplier_bps,
                starts_at=p.starts_at,
                ends_at=p.ends_at,
                category=p.category,
                product_type=p.product_type,
            )
            for p in version.promotions
        ),
        order_cap=version.order_cap,
    )


async def set_earn_rules(
    session: AsyncSession,
    caller: PartnerInfo,
    body: EarnRulesCreate,
    *,
    at: dt.datetime | None = None,
) -> EarnRulesOut:
    """A new version of the calling brand's rules, from ``body.effective_at`` (default now)."""
    brand_currency(caller)
    _check(body)
    now = moment_of(at)
    effective = now if body.effective_at is None else moment_of(body.effective_at)
    if effective < now:
        raise EffectiveInPast(
            f"effective_at {effective.isoformat()} is before now ({now.isoformat()})",
            field="effective_at",
        )
    stored = msgspec.structs.replace(body, effective_at=None)
    row = _Row(
        id=uuid7(),
        partner_id=caller.id,
        rules=msgspec.json.encode(stored).decode(),
        effective_at=effective,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            await session.execute(insert(earn_rule_version_t).values(**msgspec.structs.asdict(row)))
    except IntegrityError as exc:
        raise VersionConflict("the earn rules already have a version taking effect then") from exc
    return _out(row)


async def rules_in_force(
    session: AsyncSession, caller: PartnerInfo, at: dt.datetime
) -> EarnRulesOut:
    """The caller's version in force at ``at``; ``earn-rules-not-found`` before its first."""
    row = (
        await session.execute(
            select(earn_rule_version_t)
            .where(
                earn_rule_version_t.c.partner_id == caller.id,
                earn_rule_version_t.c.effective_at <= at,
            )
            .order_by(earn_rule_version_t.c.effective_at.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        raise EarnRulesNotFound(
            "the brand has no earn rules in force; set them with POST /v1/earn-rules"
        )
    return _out(row)


async def rules_page(
    session: AsyncSession, caller: PartnerInfo, at: dt.datetime | None = None
) -> EarnRulesPage:
    """The caller's version in force at ``at`` (default now) and every version, latest first."""
    brand_currency(caller)
    moment = moment_of(at)
    rows = (
        await session.execute(
            select(earn_rule_version_t)
            .where(earn_rule_version_t.c.partner_id == caller.id)
            .order_by(earn_rule_version_t.c.effective_at.desc())
        )
    ).all()
    versions = [_out(row) for row in rows]
    current = next((v for v in versions if v.effective_at <= moment), None)
    return EarnRulesPage(at=moment, current=current, versions=versions)
