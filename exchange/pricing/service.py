"""Point values and rates: effective-dated, immutable versions.

Every function works inside the caller's database transaction and never commits. The point value
or rate version in force at a time ``T`` is the one with the greatest ``effective_at <= T``.
Versions are never changed; a new one supersedes. Every function that reads or writes a version
takes ``at`` (default: now), the moment it prices at.

What these functions return is the contract's answer itself (:class:`PointValueOut`,
:class:`RateOut`): the controllers pass it through.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.contract.schemas import PointValueOut, RateOut
from exchange.contract.types import MAX_MICROS_PER_POINT, MAX_POINTS
from exchange.errors import (
    EffectiveInPast,
    InvalidInput,
    PartnerNotFound,
    PointValueNotFound,
    RateNotFound,
    SameBrand,
    UnknownCurrency,
    VersionConflict,
)
from exchange.ledger.parties import PartnerInfo
from exchange.memo import memo, remember
from exchange.pricing.models import PointValue, RateVersion
from partners.models import Partner
from partners.service import find_partner_by_currency, get_partner

partner_t = cast(Table, Partner.__table__)
point_value_t = cast(Table, PointValue.__table__)
rate_version_t = cast(Table, RateVersion.__table__)


def moment_of(at: dt.datetime | None) -> dt.datetime:
    """``at`` in UTC, or now; a time without a zone is a programming error."""
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    return at.astimezone(dt.UTC)


def whole_number(value: object, field: str, low: int, high: int) -> int:
    """``value`` if it is an int from ``low`` to ``high``; ``invalid-input`` otherwise.

    The HTTP bodies are checked by their Structs already; this guards the CLI and Python callers."""
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


async def brand_by_currency(session: AsyncSession, currency: str) -> PartnerInfo:
    """The brand whose points currency is ``currency``; ``unknown-currency`` otherwise.
    Remembered once found (``exchange.memo``: a brand's row never changes)."""
    known = memo(session, "brand_by_currency")
    brand: PartnerInfo | None = known.get(currency)
    if brand is not None:
        return brand
    brand = await find_partner_by_currency(session, currency)
    if brand is None or brand.kind != "brand":
        raise UnknownCurrency(f"no brand has the currency {currency!r}", currency=currency)
    remember(session, "brand_by_currency", currency, brand)
    return brand


async def destination_currency(session: AsyncSession, to_partner: str | None) -> str | None:
    """``to_partner`` as a currency code, also when given as a brand's partner id."""
    if to_partner is None:
        return None
    try:
        partner_id = uuid.UUID(to_partner)
    except ValueError:
        return to_partner
    try:
        partner: PartnerInfo | None = await get_partner(session, partner_id)
    except PartnerNotFound:
        partner = None
    if partner is None or partner.kind != "brand" or partner.currency is None:
        raise UnknownCurrency(f"no brand has the partner id {to_partner}", currency=to_partner)
    return partner.currency


def _effective(effective_at: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """A new version takes effect now or later: backdating one would change, after the fact,
    which version was in force when earlier conversions were priced."""
    if effective_at is None:
        return now
    effective = moment_of(effective_at)
    if effective < now:
        raise EffectiveInPast(
            f"effective_at {effective.isoformat()} is before now ({now.isoformat()})",
            field="effective_at",
        )
    return effective


async def _insert_version(session: AsyncSession, statement: Any, what: str) -> None:
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError as exc:
        raise VersionConflict(f"{what} already has a version taking effect then") from exc


async def set_point_value(
    session: AsyncSession,
    currency: str,
    micros_per_point: int,
    *,
    effective_at: dt.datetime | None = None,
    at: dt.datetime | None = None,
) -> PointValueOut:
    """Give a brand's point a new value in settlement micros, from ``effective_at`` (default now).

    At most 10^6 micros (one unit of the settlement currency) per point: see
    :data:`exchange.contract.types.MAX_MICROS_PER_POINT`."""
    brand = await brand_by_currency(session, currency)
    whole_number(micros_per_point, "micros_per_point", 1, MAX_MICROS_PER_POINT)
    effective = _effective(effective_at, moment_of(at))
    value = PointValueOut(
        id=uuid7(),
        partner_id=brand.id,
        currency=currency,
        micros_per_point=micros_per_point,
        effective_at=effective,
        created_at=utcnow(),
    )
    await _insert_version(
        session,
        insert(point_value_t).values(
            id=value.id,
            partner_id=brand.id,
            micros_per_point=micros_per_point,
            effective_at=effective,
            created_at=value.created_at,
        ),
        f"the {currency} point value",
    )
    return value


async def set_rate(
    session: AsyncSession,
    from_currency: str,
    to_currency: str,
    *,
    from_points: int,
    to_points: int,
    fee_bps: int,
    min_points: int = 0,
    effective_at: dt.datetime | None = None,
    at: dt.datetime | None = None,
) -> RateOut:
    """A new rate version for the ordered pair of brands, from ``effective_at`` (default now)."""
    source = await brand_by_currency(session, from_currency)
    destination = await brand_by_currency(session, to_currency)
    if source.id == destination.id:
        raise SameBrand(f"a rate from {from_currency} to itself makes no sense")
    whole_number(from_points, "from_points", 1, MAX_POINTS)
    whole_number(to_points, "to_points", 1, MAX_POINTS)
    whole_number(fee_bps, "fee_bps", 0, 10_000)
    whole_number(min_points, "min_points", 0, MAX_POINTS)
    effective = _effective(effective_at, moment_of(at))
    rate = RateOut(
        id=uuid7(), from_partner_id=source.id, from_currency=from_currency,
        to_partner_id=destination.id, to_currency=to_currency, from_points=from_points,
        to_points=to_points, fee_bps=fee_bps, min_points=min_points, effective_at=effective,
        created_at=utcnow(),
    )  # fmt: skip
    await _insert_version(
        session,
        insert(rate_version_t).values(
            id=rate.id,
            from_partner_id=source.id,
            to_partner_id=destination.id,
            from_points=from_points,
            to_points=to_points,
            fee_bps=fee_bps,
            min_points=min_points,
            effective_at=effective,
            created_at=rate.created_at,
        ),
        f"the rate {from_currency} to {to_currency}",
    )
    return rate


def _point_value_out(row: Any, currency: str) -> PointValueOut:
    return PointValueOut(
        id=row.id,
        partner_id=row.partner_id,
        currency=currency,
        micros_per_point=row.micros_per_point,
        effective_at=row.effective_at,
        created_at=row.created_at,
    )


async def value_in_force(
    session: AsyncSession, partner: PartnerInfo, at: dt.datetime | None = None
) -> PointValueOut:
    """The brand's point value in force at ``at`` (default now); ``point-value-not-found``."""
    now = moment_of(at)
    row = (await session.execute(_VALUE_IN_FORCE, {"partner_id": partner.id, "now": now})).first()
    if row is None:
        raise PointValueNotFound(
            f"no point value is in force for {partner.currency or partner.name}",
            currency=partner.currency,
        )
    return _point_value_out(row, partner.currency or "")


async def values_in_force(
    session: AsyncSession, at: dt.datetime | None = None
) -> list[PointValueOut]:
    """Every brand's point value in force at ``at`` (default now), by currency."""
    now = moment_of(at)
    newer = point_value_t.alias("newer")
    latest = (
        select(func.max(newer.c.effective_at))
        .where(newer.c.partner_id == point_value_t.c.partner_id, newer.c.effective_at <= now)
        .correlate(point_value_t)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(point_value_t, partner_t.c.currency)
        .join(partner_t, partner_t.c.id == point_value_t.c.partner_id)
        .where(point_value_t.c.effective_at == latest)
        .order_by(partner_t.c.currency)
    )
    return [_point_value_out(row, row.currency) for row in rows]


def _rate_query() -> Any:
    source = partner_t.alias("source")
    destination = partner_t.alias("destination")
    return (
        select(
            rate_version_t,
            source.c.currency.label("from_currency"),
            destination.c.currency.label("to_currency"),
        )
        .join(source, source.c.id == rate_version_t.c.from_partner_id)
        .join(destination, destination.c.id == rate_version_t.c.to_partner_id)
    )


def _rate_out(row: Any) -> RateOut:
    return RateOut(
        id=row.id, from_partner_id=row.from_partner_id, from_currency=row.from_currency,
        to_partner_id=row.to_partner_id, to_currency=row.to_currency,
        from_points=row.from_points, to_points=row.to_points, fee_bps=row.fee_bps,
        min_points=row.min_points, effective_at=row.effective_at, created_at=row.created_at,
    )  # fmt: skip


# Built once: a conversion prices with these on every request, and building a statement (and its
# cache key) cost more than running it.
_VALUE_IN_FORCE = (
    select(point_value_t)
    .where(
        point_value_t.c.partner_id == bindparam("partner_id"),
        point_value_t.c.effective_at <= bindparam("now"),
    )
    .order_by(point_value_t.c.effective_at.desc())
    .limit(1)
)
_RATE_IN_FORCE = (
    _rate_query()
    .where(
        rate_version_t.c.from_partner_id == bindparam("from_id"),
        rate_version_t.c.to_partner_id == bindparam("to_id"),
        rate_version_t.c.effective_at <= bindparam("now"),
    )
    .order_by(rate_version_t.c.effective_at.desc())
    .limit(1)
)


async def rate_version(session: AsyncSession, rate_version_id: uuid.UUID) -> RateOut:
    """The rate version with this id (which exists: a quote or a transaction names it)."""
    row = (await session.execute(_rate_query().where(rate_version_t.c.id == rate_version_id))).one()
    return _rate_out(row)


async def rate_in_force(
    session: AsyncSession,
    from_partner: PartnerInfo,
    to_partner: PartnerInfo,
    at: dt.datetime | None = None,
) -> RateOut:
    """The rate version in force at ``at`` (default now) for the pair; ``rate-not-found``."""
    now = moment_of(at)
    row = (
        await session.execute(
            _RATE_IN_FORCE, {"from_id": from_partner.id, "to_id": to_partner.id, "now": now}
        )
    ).first()
    if row is None:
        raise RateNotFound(
            f"no rate from {from_partner.currency} to {to_partner.currency} is in force",
            from_currency=from_partner.currency,
            to_currency=to_partner.currency,
        )
    return _rate_out(row)


def _in_force(table: Table, keys: tuple[str, ...]) -> Any:
    """The condition "this row is the version in force at ``:now`` for its key" (the newest
    that took effect by then)."""
    newer = table.alias("newer")
    latest = (
        select(func.max(newer.c.effective_at))
        .where(
            *(newer.c[key] == table.c[key] for key in keys),
            newer.c.effective_at <= bindparam("now"),
        )
        .correlate(table)
        .scalar_subquery()
    )
    return table.c.effective_at == latest


# Built once, with expanding parameters: a group of conversions prices with these.
_RATES_OF_PAIRS = _rate_query().where(
    _in_force(rate_version_t, ("from_partner_id", "to_partner_id")),
    tuple_(rate_version_t.c.from_partner_id, rate_version_t.c.to_partner_id).in_(
        bindparam("pairs", expanding=True)
    ),
)
_VALUES_OF_PARTNERS = select(point_value_t).where(
    _in_force(point_value_t, ("partner_id",)),
    point_value_t.c.partner_id.in_(bindparam("partner_ids", expanding=True)),
)


@dataclass(frozen=True)
class PricesInForce:
    """The rate versions of some pairs of brands and the point values of some brands, in force
    at one moment, read in two statements (a group of conversions prices with them). A pair or
    a brand missing has nothing in force: :meth:`rate` and :meth:`value` raise its refusal."""

    rates: dict[tuple[uuid.UUID, uuid.UUID], RateOut]
    values: dict[uuid.UUID, PointValueOut]

    def rate(self, source: PartnerInfo, destination: PartnerInfo) -> RateOut:
        rate = self.rates.get((source.id, destination.id))
        if rate is None:
            raise RateNotFound(
                f"no rate from {source.currency} to {destination.currency} is in force",
                from_currency=source.currency,
                to_currency=destination.currency,
            )
        return rate

    def value(self, partner: PartnerInfo) -> PointValueOut:
        value = self.values.get(partner.id)
        if value is None:
            raise PointValueNotFound(
                f"no point value is in force for {partner.currency or partner.name}",
                currency=partner.currency,
            )
        return value


async def prices_in_force(
    session: AsyncSession,
    pairs: Collection[tuple[PartnerInfo, PartnerInfo]],
    at: dt.datetime | None = None,
) -> PricesInForce:
    """The rates of ``pairs`` (source, destination) and the values of their brands in force at
    ``at`` (default now)."""
    now = moment_of(at)
    if not pairs:
        return PricesInForce({}, {})
    partners = {partner.id: partner for pair in pairs for partner in pair}
    wanted = sorted({(source.id, destination.id) for source, destination in pairs})
    rate_rows = await session.execute(_RATES_OF_PAIRS, {"pairs": wanted, "now": now})
    rates = {(row.from_partner_id, row.to_partner_id): _rate_out(row) for row in rate_rows}
    value_rows = await session.execute(
        _VALUES_OF_PARTNERS, {"partner_ids": sorted(partners), "now": now}
    )
    values = {
        row.partner_id: _point_value_out(row, partners[row.partner_id].currency or "")
        for row in value_rows
    }
    return PricesInForce(rates, values)


async def rates_in_force(session: AsyncSession, at: dt.datetime | None = None) -> list[RateOut]:
    """Every pair's rate version in force at ``at`` (default now), by currency pair."""
    now = moment_of(at)
    newer = rate_version_t.alias("newer")
    latest = (
        select(func.max(newer.c.effective_at))
        .where(
            newer.c.from_partner_id == rate_version_t.c.from_partner_id,
            newer.c.to_partner_id == rate_version_t.c.to_partner_id,
            newer.c.effective_at <= now,
        )
        .correlate(rate_version_t)
        .scalar_subquery()
    )
    rows = await session.execute(
        _rate_query()
        .where(rate_version_t.c.effective_at == latest)
        .order_by("from_currency", "to_currency")
    )
    return [_rate_out(row) for row in rows]


async def point_value_history(session: AsyncSession) -> list[PointValueOut]:
    """Every point value version of every brand, by currency then effective time."""
    rows = await session.execute(
        select(point_value_t, partner_t.c.currency)
        .join(partner_t, partner_t.c.id == point_value_t.c.partner_id)
        .order_by(partner_t.c.currency, point_value_t.c.effective_at)
    )
    return [_point_value_out(row, row.currency) for row in rows]


async def rate_history(session: AsyncSession) -> list[RateOut]:
    """Every rate version of every pair, by currency pair then effective time."""
    rows = await session.execute(
        _rate_query().order_by("from_currency", "to_currency", rate_version_t.c.effective_at)
    )
    return [_rate_out(row) for row in rows]
