"""Point values, rates, quotes, conversions and donations.

Every function works inside the caller's database transaction and never commits. Conversions and
donations build their legs here and post them through the one engine
(:func:`exchange.ledger.engine.post_transaction`); their ``points`` is the member's source points
``P``, so :func:`exchange.ledger.service.reverse` reverses them, money legs included.

Pricing is effective-dated: the point value or rate version in force at a time ``T`` is the one
with the greatest ``effective_at <= T``. Versions are never changed; a new one supersedes. Every
function that reads or writes a version takes ``at`` (default: now), the moment it prices at.

Conversion of ``P`` points of brand A into brand B (fee and out: :mod:`exchange.pricing.arithmetic`)

    ledger A      member A  -P            A issuance  +P     (the fee too: the points go home)
    ledger B      B issuance  -out        member B  +out
    money         A settlement  -(out * value(B) + fee * value(A))
                  B settlement  +out * value(B)
                  operator settlement  +fee * value(A)      (omitted when the fee is 0)

Donation of ``P`` points of brand A to charity C

    ledger A      member A  -P            A issuance  +P
    money         A settlement  -P * value(A)   C settlement  +P * value(A)

Settlement shards: every participant's settlement account is split into ``shards`` accounts, and
a transaction uses, for each participant, the shard ``member account id % partner.shards``. A
brand's side is keyed on its own member (the same shard as its issuance), a charity's and the
operator's on the source member. Shard 0 for all would put every conversion and donation of the
coalition in one queue on the operator's row; this spreads them as far as the members spread.

Locks and deadlocks: the engine takes every account lock in one ``SELECT ... ORDER BY id FOR
UPDATE``, so opposite conversions (A to B and B to A) meet their accounts in the same order. The
only other row a conversion locks is its quote, and it claims it *before* the engine call: a
transaction holds at most one quote and takes it before any account, so no cycle of waits can
form, and a second spender of the same quote waits on the quote row alone (holding no account
lock), then finds it used and stops.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.contract.types import MAX_MICROS_PER_POINT, MAX_POINTS
from exchange.errors import (
    BelowCharityMinimum,
    BelowMinimum,
    EffectiveInPast,
    InvalidInput,
    LimitExceeded,
    MemberNotEnrolled,
    MemberNotFound,
    NotACharity,
    OperatorNotConfigured,
    PartnerNotFound,
    PointValueNotFound,
    QuoteExpired,
    QuoteMismatch,
    QuoteNotFound,
    QuoteUsed,
    RateNotFound,
    SameBrand,
    UnknownCurrency,
    VersionConflict,
    ZeroOutput,
)
from exchange.ledger import members as ledger
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.members import MemberAccount
from exchange.ledger.models import Account
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref, check_points
from exchange.outbox import enqueue_event
from exchange.pricing.arithmetic import (
    ConversionAmounts,
    ConversionRefused,
    RateTerms,
    conversion_amounts,
    conversion_money,
    money_micros,
)
from exchange.pricing.models import PointValue, Quote, RateVersion
from partners.models import Partner
from partners.service import find_partner_by_currency, get_partner

QUOTE_TTL_SECONDS = 120
"""How long a quote holds its rate and values unless the caller asks for less (or more)."""
MAX_QUOTE_TTL_SECONDS = 900

account_t = cast(Table, Account.__table__)
partner_t = cast(Table, Partner.__table__)
point_value_t = cast(Table, PointValue.__table__)
rate_version_t = cast(Table, RateVersion.__table__)
quote_t = cast(Table, Quote.__table__)


def _moment(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise ValueError("naive datetime")
    return at.astimezone(dt.UTC)


def _whole(value: object, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


async def brand_by_currency(session: AsyncSession, currency: object) -> PartnerInfo:
    """The brand whose points currency is ``currency``; ``unknown-currency`` otherwise."""
    if not isinstance(currency, str):
        raise InvalidInput("a points currency is a code such as SKY", field="currency")
    brand = await find_partner_by_currency(session, currency)
    if brand is None or brand.kind != "brand":
        raise UnknownCurrency(f"no brand has the currency {currency!r}", currency=currency)
    return brand


# --- point values and rates ---------------------------------------------------------------------


@dataclass(frozen=True)
class PointValueView:
    id: uuid.UUID
    partner_id: uuid.UUID
    currency: str
    micros_per_point: int
    effective_at: dt.datetime
    created_at: dt.datetime


@dataclass(frozen=True)
class RateView:
    id: uuid.UUID
    from_partner_id: uuid.UUID
    from_currency: str
    to_partner_id: uuid.UUID
    to_currency: str
    from_points: int
    to_points: int
    fee_bps: int
    min_points: int
    effective_at: dt.datetime
    created_at: dt.datetime

    @property
    def terms(self) -> RateTerms:
        return RateTerms(self.from_points, self.to_points, self.fee_bps, self.min_points)


def _effective(effective_at: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """A new version takes effect now or later: backdating one would change, after the fact,
    which version was in force when earlier conversions were priced."""
    if effective_at is None:
        return now
    effective = _moment(effective_at)
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
) -> PointValueView:
    """Give a brand's point a new value in settlement micros, from ``effective_at`` (default now).

    At most 10^6 micros (one unit of the settlement currency) per point: see
    :data:`exchange.pricing.models.MAX_MICROS_PER_POINT`."""
    brand = await brand_by_currency(session, currency)
    _whole(micros_per_point, "micros_per_point", 1, MAX_MICROS_PER_POINT)
    now = _moment(at)
    effective = _effective(effective_at, now)
    view = PointValueView(uuid7(), brand.id, currency, micros_per_point, effective, utcnow())
    await _insert_version(
        session,
        insert(point_value_t).values(
            id=view.id,
            partner_id=brand.id,
            micros_per_point=micros_per_point,
            effective_at=effective,
            created_at=view.created_at,
        ),
        f"the {currency} point value",
    )
    return view


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
) -> RateView:
    """A new rate version for the ordered pair of brands, from ``effective_at`` (default now)."""
    source = await brand_by_currency(session, from_currency)
    destination = await brand_by_currency(session, to_currency)
    if source.id == destination.id:
        raise SameBrand(f"a rate from {from_currency} to itself makes no sense")
    _whole(from_points, "from_points", 1, MAX_POINTS)
    _whole(to_points, "to_points", 1, MAX_POINTS)
    _whole(fee_bps, "fee_bps", 0, 10_000)
    _whole(min_points, "min_points", 0, MAX_POINTS)
    now = _moment(at)
    effective = _effective(effective_at, now)
    view = RateView(
        uuid7(), source.id, from_currency, destination.id, to_currency,
        from_points, to_points, fee_bps, min_points, effective, utcnow(),
    )  # fmt: skip
    await _insert_version(
        session,
        insert(rate_version_t).values(
            id=view.id,
            from_partner_id=source.id,
            to_partner_id=destination.id,
            from_points=from_points,
            to_points=to_points,
            fee_bps=fee_bps,
            min_points=min_points,
            effective_at=effective,
            created_at=view.created_at,
        ),
        f"the rate {from_currency} to {to_currency}",
    )
    return view


def _value_view(row: Any, currency: str) -> PointValueView:
    return PointValueView(
        row.id, row.partner_id, currency, row.micros_per_point, row.effective_at, row.created_at
    )


async def value_in_force(
    session: AsyncSession, partner: PartnerInfo, at: dt.datetime | None = None
) -> PointValueView:
    """The brand's point value in force at ``at`` (default now); ``point-value-not-found``."""
    now = _moment(at)
    row = (
        await session.execute(
            select(point_value_t)
            .where(point_value_t.c.partner_id == partner.id, point_value_t.c.effective_at <= now)
            .order_by(point_value_t.c.effective_at.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        raise PointValueNotFound(
            f"no point value is in force for {partner.currency or partner.name}",
            currency=partner.currency,
        )
    return _value_view(row, partner.currency or "")


async def values_in_force(
    session: AsyncSession, at: dt.datetime | None = None
) -> list[PointValueView]:
    """Every brand's point value in force at ``at`` (default now), by currency."""
    now = _moment(at)
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
    return [_value_view(row, row.currency) for row in rows]


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


def _rate_view(row: Any) -> RateView:
    return RateView(
        row.id, row.from_partner_id, row.from_currency, row.to_partner_id, row.to_currency,
        row.from_points, row.to_points, row.fee_bps, row.min_points,
        row.effective_at, row.created_at,
    )  # fmt: skip


async def rate_in_force(
    session: AsyncSession,
    from_partner: PartnerInfo,
    to_partner: PartnerInfo,
    at: dt.datetime | None = None,
) -> RateView:
    """The rate version in force at ``at`` (default now) for the pair; ``rate-not-found``."""
    now = _moment(at)
    row = (
        await session.execute(
            _rate_query()
            .where(
                rate_version_t.c.from_partner_id == from_partner.id,
                rate_version_t.c.to_partner_id == to_partner.id,
                rate_version_t.c.effective_at <= now,
            )
            .order_by(rate_version_t.c.effective_at.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        raise RateNotFound(
            f"no rate from {from_partner.currency} to {to_partner.currency} is in force",
            from_currency=from_partner.currency,
            to_currency=to_partner.currency,
        )
    return _rate_view(row)


async def rates_in_force(session: AsyncSession, at: dt.datetime | None = None) -> list[RateView]:
    """Every pair's rate version in force at ``at`` (default now), by currency pair."""
    now = _moment(at)
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
    return [_rate_view(row) for row in rows]


# --- quotes and conversions ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Pricing:
    rate: RateView
    amounts: ConversionAmounts
    source_value_micros: int
    destination_value_micros: int


async def _price(
    session: AsyncSession,
    source: PartnerInfo,
    destination: PartnerInfo,
    points: int,
    now: dt.datetime,
) -> _Pricing:
    rate = await rate_in_force(session, source, destination, now)
    try:
        amounts = conversion_amounts(points, rate.terms)
    except ConversionRefused as refused:
        facts = {"points": points, "min_points": rate.min_points, "rate_version_id": str(rate.id)}
        if refused.reason == "below-minimum":
            raise BelowMinimum(
                f"{points} points is below the minimum of {rate.min_points}", **facts
            ) from refused
        raise ZeroOutput(
            f"{points} {source.currency} would give no {destination.currency} points", **facts
        ) from refused
    if amounts.out > MAX_POINTS:
        raise LimitExceeded(
            f"the conversion would give {amounts.out} points, more than {MAX_POINTS}",
            out=amounts.out,
        )
    source_value = await value_in_force(session, source, now)
    destination_value = await value_in_force(session, destination, now)
    return _Pricing(
        rate, amounts, source_value.micros_per_point, destination_value.micros_per_point
    )


@dataclass(frozen=True)
class _Parties:
    destination: PartnerInfo
    source_member: MemberAccount
    destination_member: MemberAccount


async def _parties(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str,
    to_partner: str,
    to_member_ref: str,
) -> _Parties:
    """The source member, the destination brand and its member, or the refusal that fits."""
    source_member = await ledger.get_member(session, caller, member_ref)
    check_member_ref(to_member_ref, "to_member_ref")
    destination = await brand_by_currency(session, to_partner)
    if destination.id == caller.id:
        raise SameBrand(f"{to_partner} points cannot be converted into {to_partner} points")
    try:
        destination_member = await ledger.get_member(session, destination, to_member_ref)
    except MemberNotFound as exc:
        raise MemberNotEnrolled(to_member_ref, to_partner) from exc
    return _Parties(destination, source_member, destination_member)


@dataclass(frozen=True)
class QuoteView:
    id: uuid.UUID
    rate_version_id: uuid.UUID
    from_currency: str
    to_currency: str
    member_ref: str
    to_member_ref: str
    points: int
    fee: int
    out: int
    source_value_micros: int
    destination_value_micros: int
    destination_micros: int
    """What the source brand will owe the destination brand: ``out * value(destination)``."""
    operator_fee_micros: int
    """What the source brand will owe the operator: ``fee * value(source)``."""
    expires_at: dt.datetime
    created_at: dt.datetime


async def create_quote(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str,
    to_partner: str,
    to_member_ref: str,
    points: int,
    ttl_seconds: int = QUOTE_TTL_SECONDS,
    *,
    at: dt.datetime | None = None,
) -> QuoteView:
    """Price a conversion now and hold the rate version and both point values (and so the
    amounts) for ``ttl_seconds``. Refuses whatever the conversion itself would refuse on price
    or parties; it reserves no points."""
    check_points(points)
    _whole(ttl_seconds, "ttl_seconds", 1, MAX_QUOTE_TTL_SECONDS)
    now = _moment(at)
    parties = await _parties(session, caller, member_ref, to_partner, to_member_ref)
    priced = await _price(session, caller, parties.destination, points, now)
    money = conversion_money(
        priced.amounts, priced.source_value_micros, priced.destination_value_micros
    )
    quote = QuoteView(
        id=uuid7(),
        rate_version_id=priced.rate.id,
        from_currency=priced.rate.from_currency,
        to_currency=priced.rate.to_currency,
        member_ref=member_ref,
        to_member_ref=to_member_ref,
        points=points,
        fee=priced.amounts.fee,
        out=priced.amounts.out,
        source_value_micros=priced.source_value_micros,
        destination_value_micros=priced.destination_value_micros,
        destination_micros=money.destination_micros,
        operator_fee_micros=money.operator_fee_micros,
        expires_at=now + dt.timedelta(seconds=ttl_seconds),
        created_at=now,
    )
    await session.execute(
        insert(quote_t).values(
            id=quote.id,
            partner_id=caller.id,
            rate_version_id=quote.rate_version_id,
            from_partner_id=caller.id,
            to_partner_id=parties.destination.id,
            member_ref=member_ref,
            to_member_ref=to_member_ref,
            points=points,
            fee=quote.fee,
            out=quote.out,
            source_value_micros=quote.source_value_micros,
            destination_value_micros=quote.destination_value_micros,
            expires_at=quote.expires_at,
            created_at=now,
        )
    )
    return quote


@dataclass(frozen=True)
class Conversion:
    transaction_id: uuid.UUID
    rate_version_id: uuid.UUID
    quote_id: uuid.UUID | None
    from_currency: str
    to_currency: str
    member_ref: str
    to_member_ref: str
    points: int
    fee: int
    out: int
    source_value_micros: int
    destination_value_micros: int
    destination_micros: int
    """What the source brand owes the destination brand."""
    operator_fee_micros: int
    """What the source brand owes the operator."""
    settlement_currency: str
    created_at: dt.datetime
    posted: PostedTransaction


async def _quoted(
    session: AsyncSession,
    caller: PartnerInfo,
    quote_id: uuid.UUID,
    requested: Mapping[str, object],
    now: dt.datetime,
) -> Any:
    """The caller's quote, if the request matches it and it is unused and unexpired at ``now``."""
    row = (
        await session.execute(
            select(quote_t, partner_t.c.currency.label("to_currency"))
            .join(partner_t, partner_t.c.id == quote_t.c.to_partner_id)
            .where(quote_t.c.id == quote_id, quote_t.c.partner_id == caller.id)
        )
    ).first()
    if row is None:
        raise QuoteNotFound(f"no quote {quote_id}", quote_id=str(quote_id))
    quoted = {
        "member_ref": row.member_ref,
        "to_partner": row.to_currency,
        "to_member_ref": row.to_member_ref,
        "points": row.points,
    }
    for field, given in requested.items():
        if given is not None and given != quoted[field]:
            raise QuoteMismatch(
                f"{field} is {given!r}, the quote says {quoted[field]!r}",
                field=field,
                quote_id=str(quote_id),
            )
    if row.used_at is not None:
        raise QuoteUsed(f"quote {quote_id} has been used", quote_id=str(quote_id))
    if now >= row.expires_at:
        raise QuoteExpired(
            f"quote {quote_id} expired at {row.expires_at.isoformat()}",
            quote_id=str(quote_id),
            expires_at=row.expires_at.isoformat(),
        )
    return row


async def _claim_quote(session: AsyncSession, quote_id: uuid.UUID, now: dt.datetime) -> None:
    """Mark the quote used, exactly once. Conditional, so that of two requests spending one quote
    at once exactly one updates it; the other waits on this row (PostgreSQL) or on the write
    lock (SQLite), then finds it used. Taken just before the engine's account locks, always."""
    claimed = await session.execute(
        update(quote_t)
        .where(quote_t.c.id == quote_id, quote_t.c.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise QuoteUsed(f"quote {quote_id} has been used", quote_id=str(quote_id))


async def _settlement_accounts(
    session: AsyncSession, wanted: dict[uuid.UUID, int]
) -> dict[uuid.UUID, tuple[int, str]]:
    """Each partner's settlement account on the given shard: partner id -> (account id, ledger)."""
    rows = await session.execute(
        select(account_t.c.partner_id, account_t.c.id, account_t.c.ledger).where(
            account_t.c.kind == "settlement",
            account_t.c.member_id.is_(None),
            or_(
                *(
                    and_(account_t.c.partner_id == partner_id, account_t.c.shard == shard)
                    for partner_id, shard in wanted.items()
                )
            ),
        )
    )
    found = {partner_id: (account_id, ledger) for partner_id, account_id, ledger in rows}
    missing = set(wanted) - set(found)
    if missing:
        raise LookupError(f"no settlement account for partners {sorted(map(str, missing))}")
    return found


async def _operator(session: AsyncSession) -> tuple[uuid.UUID, int]:
    row = (
        await session.execute(
            select(partner_t.c.id, partner_t.c.shards).where(partner_t.c.kind == "operator")
        )
    ).first()
    if row is None:
        raise OperatorNotConfigured("a conversion fee needs the operator partner to be registered")
    return row.id, row.shards


async def post_conversion(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str | None,
    to_partner: str | None,
    to_member_ref: str | None,
    points: int | None,
    *,
    quote_id: uuid.UUID | None = None,
    reference: str | None = None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> Conversion:
    """Convert ``points`` of the caller's member into ``to_partner``'s points for ``to_member_ref``,
    enrolled there, in one transaction on three ledgers (see the module notes).

    Without a quote, prices at ``at`` (default now). With ``quote_id``, the caller's unexpired,
    unused quote fixes the rate version and values; the other arguments may be left ``None``
    (they are then the quote's) and, where given, must match it."""
    now = _moment(at)
    quote_row = None
    if quote_id is not None:
        requested = {
            "member_ref": member_ref,
            "to_partner": to_partner,
            "to_member_ref": to_member_ref,
            "points": points,
        }
        quote_row = await _quoted(session, caller, quote_id, requested, now)
        member_ref, to_partner, to_member_ref, points = (
            quote_row.member_ref, quote_row.to_currency, quote_row.to_member_ref, quote_row.points,
        )  # fmt: skip
    if member_ref is None or to_partner is None or to_member_ref is None or points is None:
        raise InvalidInput("member_ref, to_partner, to_member_ref and points are required")
    check_points(points)
    parties = await _parties(session, caller, member_ref, to_partner, to_member_ref)
    if quote_row is None:
        priced = await _price(session, caller, parties.destination, points, now)
    else:
        rate = _rate_view(
            (
                await session.execute(
                    _rate_query().where(rate_version_t.c.id == quote_row.rate_version_id)
                )
            ).one()
        )
        amounts = ConversionAmounts(
            quote_row.points, quote_row.fee, quote_row.points - quote_row.fee, quote_row.out
        )
        priced = _Pricing(
            rate, amounts, quote_row.source_value_micros, quote_row.destination_value_micros
        )
    amounts = priced.amounts
    money = conversion_money(amounts, priced.source_value_micros, priced.destination_value_micros)

    shard_key = parties.source_member.account_id
    wanted = {
        caller.id: shard_key % caller.shards,
        parties.destination.id: parties.destination_member.account_id % parties.destination.shards,
    }
    operator_id = None
    if money.operator_fee_micros:
        operator_id, operator_shards = await _operator(session)
        wanted[operator_id] = shard_key % operator_shards
    settlement = await _settlement_accounts(session, wanted)
    money_legs = [
        Leg(settlement[caller.id][0], -(money.destination_micros + money.operator_fee_micros)),
        Leg(settlement[parties.destination.id][0], money.destination_micros),
    ]
    if operator_id is not None:
        money_legs.append(Leg(settlement[operator_id][0], money.operator_fee_micros))
    source, target = parties.source_member, parties.destination_member
    legs = [
        Leg(source.account_id, -amounts.points),
        Leg(source.issuance_account_id, amounts.points),
        Leg(target.issuance_account_id, -amounts.out),
        Leg(target.account_id, amounts.out),
        *money_legs,
    ]
    settlement_currency = settlement[caller.id][1]
    if quote_id is not None:
        await _claim_quote(session, quote_id, now)
    details = {
        "from_currency": priced.rate.from_currency,
        "to_currency": priced.rate.to_currency,
        "member_ref": member_ref,
        "to_member_ref": to_member_ref,
        "points": amounts.points,
        "fee": amounts.fee,
        "out": amounts.out,
        "source_value_micros": priced.source_value_micros,
        "destination_value_micros": priced.destination_value_micros,
        "destination_micros": money.destination_micros,
        "operator_fee_micros": money.operator_fee_micros,
        "settlement_currency": settlement_currency,
        "quote_id": None if quote_id is None else str(quote_id),
    }
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="convert",
            partner_id=caller.id,
            points=amounts.points,
            reference=reference,
            idempotency_key=idempotency_key,
            rate_version_id=priced.rate.id,
            legs=legs,
            member_refs={source.account_id: member_ref, target.account_id: to_member_ref},
            details=details,
        ),
    )
    # The destination brand learns of the credit by webhook; queued in this transaction, so
    # the event exists exactly when the conversion does.
    await enqueue_event(
        session,
        parties.destination.id,
        "conversion.credited",
        {
            "transaction_id": str(posted.id),
            "from_currency": priced.rate.from_currency,
            "to_currency": priced.rate.to_currency,
            "to_member_ref": to_member_ref,
            "points": amounts.out,
            "created_at": posted.created_at.isoformat(),
        },
    )
    return Conversion(
        transaction_id=posted.id,
        rate_version_id=priced.rate.id,
        quote_id=quote_id,
        from_currency=priced.rate.from_currency,
        to_currency=priced.rate.to_currency,
        member_ref=member_ref,
        to_member_ref=to_member_ref,
        points=amounts.points,
        fee=amounts.fee,
        out=amounts.out,
        source_value_micros=priced.source_value_micros,
        destination_value_micros=priced.destination_value_micros,
        destination_micros=money.destination_micros,
        operator_fee_micros=money.operator_fee_micros,
        settlement_currency=settlement_currency,
        created_at=posted.created_at,
        posted=posted,
    )


# --- donations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DonationReceipt:
    """What the member is given for a donation; the API signs :func:`donation_receipt_document`."""

    id: uuid.UUID
    """The donation's transaction id."""
    member_ref: str
    points_currency: str
    charity_id: uuid.UUID
    charity_name: str
    points: int
    amount_micros: int
    currency: str
    """The settlement currency ``amount_micros`` is in."""
    created_at: dt.datetime


def donation_receipt_document(receipt: DonationReceipt) -> dict[str, Any]:
    """The canonical document of a receipt, as signed: JSON types only, times in UTC ISO 8601,
    and a ``type`` so a signature over it cannot pass for one over another kind of document."""
    return {
        "type": "donation-receipt",
        "id": str(receipt.id),
        "member_ref": receipt.member_ref,
        "points_currency": receipt.points_currency,
        "charity": {"id": str(receipt.charity_id), "name": receipt.charity_name},
        "points": receipt.points,
        "amount_micros": receipt.amount_micros,
        "currency": receipt.currency,
        "created_at": receipt.created_at.astimezone(dt.UTC).isoformat(),
    }


async def _charity(session: AsyncSession, charity_id: uuid.UUID | str) -> PartnerInfo:
    try:
        partner_id = charity_id if isinstance(charity_id, uuid.UUID) else uuid.UUID(charity_id)
        charity = await get_partner(session, partner_id)
    except (ValueError, TypeError, AttributeError, PartnerNotFound) as exc:
        raise NotACharity(f"{charity_id} is not a charity", charity=str(charity_id)) from exc
    if charity.kind != "charity":
        raise NotACharity(f"{charity_id} is not a charity", charity=str(charity_id))
    return charity


async def post_donation(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str,
    charity_id: uuid.UUID | str,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> DonationReceipt:
    """Donate ``points`` of the caller's member to a charity: the points go back to the brand,
    and the brand owes the charity their value at ``at`` (default now)."""
    check_points(points)
    member = await ledger.get_member(session, caller, member_ref)
    charity = await _charity(session, charity_id)
    if charity.min_donation_points is not None and points < charity.min_donation_points:
        raise BelowCharityMinimum(
            f"{charity.name} accepts donations of {charity.min_donation_points} points or more",
            points=points,
            min_donation_points=charity.min_donation_points,
        )
    value = await value_in_force(session, caller, _moment(at))
    amount = money_micros(points, value.micros_per_point)
    settlement = await _settlement_accounts(
        session,
        {
            caller.id: member.account_id % caller.shards,
            charity.id: member.account_id % charity.shards,
        },
    )
    currency = settlement[caller.id][1]
    assert caller.currency is not None  # get_member refused a partner that is not a brand
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="donate",
            partner_id=caller.id,
            points=points,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=(
                Leg(member.account_id, -points),
                Leg(member.issuance_account_id, points),
                Leg(settlement[caller.id][0], -amount),
                Leg(settlement[charity.id][0], amount),
            ),
            member_refs={member.account_id: member_ref},
            details={
                "member_ref": member_ref,
                "charity_id": str(charity.id),
                "charity_name": charity.name,
                "points": points,
                "value_micros_per_point": value.micros_per_point,
                "amount_micros": amount,
                "currency": currency,
            },
        ),
    )
    return DonationReceipt(
        id=posted.id,
        member_ref=member_ref,
        points_currency=caller.currency,
        charity_id=charity.id,
        charity_name=charity.name,
        points=points,
        amount_micros=amount,
        currency=currency,
        created_at=posted.created_at,
    )
