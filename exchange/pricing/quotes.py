"""Pricing a conversion, and quotes that hold a price for a short time.

:func:`conversion_ends` and :func:`price_conversion` are what both a quote and a conversion
(:mod:`exchange.conversions.service`) do first: find the caller's member and the destination
brand, then the rate version and point values in force and the amounts they give
(:mod:`exchange.conversions.arithmetic`). Only a conversion, and only once it would otherwise
go through, looks up the destination brand's member (:func:`not_enrolled` is its refusal). A quote
records that price; a conversion that spends it takes the quote's rate version and values
instead of those in force.

A quote is claimed (:func:`claim_quote`) by the conversion that spends it, exactly once, before
the engine takes any account lock: a transaction holds at most one quote and takes it before any
account, so no cycle of waits can form, and a second spender of the same quote waits on the quote
row alone (holding no account lock), then finds it used and stops.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339, uuid7
from exchange.contract.schemas import RateOut
from exchange.contract.types import MAX_POINTS
from exchange.conversions.arithmetic import (
    ConversionAmounts,
    ConversionRefused,
    RateTerms,
    conversion_amounts,
    conversion_money,
)
from exchange.errors import (
    BelowMinimum,
    DomainError,
    LimitExceeded,
    MemberNotEnrolled,
    QuoteExpired,
    QuoteMismatch,
    QuoteNotFound,
    QuoteUsed,
    SameBrand,
    ZeroOutput,
)
from exchange.ledger import members as ledger
from exchange.ledger.members import MemberAccount
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref, check_points
from exchange.pricing.models import Quote
from exchange.pricing.service import (
    PricesInForce,
    brand_by_currency,
    moment_of,
    prices_in_force,
    rate_version,
    whole_number,
)
from partners.models import Partner

QUOTE_TTL_SECONDS = 120
"""How long a quote holds its rate and values unless the caller asks for less (or more)."""
MAX_QUOTE_TTL_SECONDS = 900

log = structlog.get_logger()
partner_t = cast(Table, Partner.__table__)
quote_t = cast(Table, Quote.__table__)


@dataclass(frozen=True)
class ConversionEnds:
    """What a quote needs: the caller's member and the destination brand. Not the destination
    member: whether another brand enrolled a member is that brand's to know, and only a
    conversion, which must credit someone, finds out (:func:`not_enrolled`)."""

    destination: PartnerInfo
    source_member: MemberAccount


@dataclass(frozen=True)
class ConversionParties:
    destination: PartnerInfo
    source_member: MemberAccount
    destination_member: MemberAccount


async def conversion_ends(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str,
    to_partner: str,
    to_member_ref: str,
) -> ConversionEnds:
    """The source member and the destination brand, or the refusal that fits."""
    source_member = await ledger.get_member(session, caller, member_ref)
    check_member_ref(to_member_ref, "to_member_ref")
    destination = await brand_by_currency(session, to_partner)
    if destination.id == caller.id:
        raise SameBrand(f"{to_partner} points cannot be converted into {to_partner} points")
    return ConversionEnds(destination, source_member)


def not_enrolled(caller: PartnerInfo, destination: PartnerInfo, to_member_ref: str) -> DomainError:
    """The refusal of a conversion to a member the destination brand has not enrolled, logged
    with the caller (a brand that collects these refusals is probing another brand's
    members)."""
    log.warning(
        "conversion to a member the destination has not enrolled",
        caller=str(caller.id),
        destination=destination.currency,
    )
    return MemberNotEnrolled(to_member_ref, destination.currency or "")


@dataclass(frozen=True)
class ConversionPrice:
    rate: RateOut
    amounts: ConversionAmounts
    source_value_micros: int
    destination_value_micros: int


def _amounts(
    points: int, rate: RateOut, source: PartnerInfo, destination: PartnerInfo
) -> ConversionAmounts:
    terms = RateTerms(rate.from_points, rate.to_points, rate.fee_bps, rate.min_points)
    try:
        amounts = conversion_amounts(points, terms)
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
    return amounts


def priced(
    prices: PricesInForce, source: PartnerInfo, destination: PartnerInfo, points: int
) -> ConversionPrice:
    """``points`` of ``source`` priced into ``destination`` at ``prices``: the rate, the
    amounts it gives, then both point values, refused in that order."""
    rate = prices.rate(source, destination)
    amounts = _amounts(points, rate, source, destination)
    source_value = prices.value(source)
    destination_value = prices.value(destination)
    return ConversionPrice(
        rate, amounts, source_value.micros_per_point, destination_value.micros_per_point
    )


async def price_conversion(
    session: AsyncSession,
    source: PartnerInfo,
    destination: PartnerInfo,
    points: int,
    now: dt.datetime,
) -> ConversionPrice:
    """``points`` of ``source`` priced into ``destination`` at the versions in force ``now``."""
    prices = await prices_in_force(session, [(source, destination)], now)
    return priced(prices, source, destination, points)


async def quoted_price(session: AsyncSession, quote: Any) -> ConversionPrice:
    """The price a quote (a row from :func:`find_quote`) holds."""
    rate = await rate_version(session, quote.rate_version_id)
    amounts = ConversionAmounts(quote.points, quote.fee, quote.points - quote.fee, quote.out)
    return ConversionPrice(rate, amounts, quote.source_value_micros, quote.destination_value_micros)


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
    or on the caller's side; it reserves no points, and it does not look at the destination
    brand's members (a quote is no oracle of who another brand enrolled)."""
    check_points(points)
    whole_number(ttl_seconds, "ttl_seconds", 1, MAX_QUOTE_TTL_SECONDS)
    now = moment_of(at)
    parties = await conversion_ends(session, caller, member_ref, to_partner, to_member_ref)
    price = await price_conversion(session, caller, parties.destination, points, now)
    money = conversion_money(
        price.amounts, price.source_value_micros, price.destination_value_micros
    )
    quote = QuoteView(
        id=uuid7(),
        rate_version_id=price.rate.id,
        from_currency=price.rate.from_currency,
        to_currency=price.rate.to_currency,
        member_ref=member_ref,
        to_member_ref=to_member_ref,
        points=points,
        fee=price.amounts.fee,
        out=price.amounts.out,
        source_value_micros=price.source_value_micros,
        destination_value_micros=price.destination_value_micros,
        destination_micros=money.destination_micros,
        operator_fee_micros=money.operator_fee_micros,
        expires_at=now + dt.timedelta(seconds=ttl_seconds),
        created_at=now,
    )
    await _record_quote(session, caller, parties.destination, quote)
    return quote


async def _record_quote(
    session: AsyncSession, caller: PartnerInfo, destination: PartnerInfo, quote: QuoteView
) -> None:
    await session.execute(
        insert(quote_t).values(
            id=quote.id,
            partner_id=caller.id,
            rate_version_id=quote.rate_version_id,
            from_partner_id=caller.id,
            to_partner_id=destination.id,
            member_ref=quote.member_ref,
            to_member_ref=quote.to_member_ref,
            points=quote.points,
            fee=quote.fee,
            out=quote.out,
            source_value_micros=quote.source_value_micros,
            destination_value_micros=quote.destination_value_micros,
            expires_at=quote.expires_at,
            created_at=quote.created_at,
        )
    )


async def find_quote(
    session: AsyncSession,
    caller: PartnerInfo,
    quote_id: uuid.UUID,
    requested: Mapping[str, object],
    now: dt.datetime,
) -> Any:
    """The caller's quote, if the request matches it and it is unused and unexpired at ``now``.

    ``requested`` names the conversion's ``member_ref``, ``to_partner``, ``to_member_ref`` and
    ``points``; those not ``None`` must be the quote's. The row carries ``to_currency``."""
    row = (
        await session.execute(
            select(quote_t, partner_t.c.currency.label("to_currency"))
            .join(partner_t, partner_t.c.id == quote_t.c.to_partner_id)
            .where(quote_t.c.id == quote_id, quote_t.c.partner_id == caller.id)
            # Locked (PostgreSQL) until the conversion's transaction ends: the check that it is
            # unused below then holds until the conversion claims it after posting.
            .with_for_update(of=quote_t)
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
            expires_at=rfc3339(row.expires_at),
        )
    return row


async def claim_quote(session: AsyncSession, quote_id: uuid.UUID, now: dt.datetime) -> None:
    """Mark the quote used, exactly once, once its conversion has posted. :func:`find_quote`
    locked the row and found it unused, so of two requests spending one quote at once the
    second waits on this row (PostgreSQL) or on the write lock (SQLite), then finds it used;
    the update is conditional all the same."""
    claimed = await session.execute(
        update(quote_t)
        .where(quote_t.c.id == quote_id, quote_t.c.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise QuoteUsed(f"quote {quote_id} has been used", quote_id=str(quote_id))
