"""Conversions of one brand's points into another's, posted through the one engine.

Every function works inside the caller's database transaction and never commits. A conversion
builds its legs here and posts them with :func:`exchange.ledger.engine.post_transaction`; its
``points`` is the member's source points ``P``, so :func:`exchange.ledger.reversal.reverse`
reverses it, money legs included.

Conversion of ``P`` points of brand A into brand B (fee and out:
:mod:`exchange.conversions.arithmetic`)

    ledger A      member A  -P            A issuance  +P     (the fee too: the points go home)
    ledger B      B issuance  -out        member B  +out
    money         A settlement  -(out * value(B) + fee * value(A))
                  B settlement  +out * value(B)
                  operator settlement  +fee * value(A)      (omitted when the fee is 0)

The settlement accounts are sharded by member (:mod:`exchange.pricing.accounts`).

Locks and deadlocks: the engine takes every account lock in one ``SELECT ... ORDER BY id FOR
UPDATE``, so opposite conversions (A to B and B to A) meet their accounts in the same order. The
only other row a conversion locks is its quote, found (and locked) *before* the engine call
and spent after it (:mod:`exchange.pricing.quotes`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339
from exchange.conversions.arithmetic import ConversionMoney, conversion_money
from exchange.errors import DomainError, InsufficientPoints, InvalidInput, MemberNotFound, SameBrand
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.expiry import available_points
from exchange.ledger.members import MemberAccount, brand_currency, find_members_of_brands
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref, check_points
from exchange.outbox import enqueue_events
from exchange.pricing.accounts import operator, settlement_accounts
from exchange.pricing.quotes import (
    ConversionEnds,
    ConversionParties,
    ConversionPrice,
    claim_quote,
    find_quote,
    not_enrolled,
    priced,
    quoted_price,
)
from exchange.pricing.service import PricesInForce, brand_by_currency, moment_of, prices_in_force


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


@dataclass(frozen=True)
class _Request:
    """What is converted: given by the caller, or taken from the quote it spends."""

    member_ref: str
    to_partner: str
    to_member_ref: str
    points: int
    quote: Any = None
    """The quote's row, when the conversion spends one."""


@dataclass(frozen=True)
class _Legs:
    legs: list[Leg]
    money: ConversionMoney
    settlement_currency: str
    own: frozenset[int]
    """The caller's accounts among the legs' (its member, issuance shard, settlement shard)."""


async def _request(
    session: AsyncSession,
    caller: PartnerInfo,
    fields: dict[str, Any],
    quote_id: uuid.UUID | None,
    now: dt.datetime,
) -> _Request:
    """The four terms of the conversion; with a quote, the quote's (those given must match)."""
    quote = None
    if quote_id is not None:
        quote = await find_quote(session, caller, quote_id, fields, now)
        fields = {
            "member_ref": quote.member_ref,
            "to_partner": quote.to_currency,
            "to_member_ref": quote.to_member_ref,
            "points": quote.points,
        }
    if any(value is None for value in fields.values()):
        raise InvalidInput("member_ref, to_partner, to_member_ref and points are required")
    check_points(fields["points"])
    return _Request(**fields, quote=quote)


async def _legs(
    session: AsyncSession, caller: PartnerInfo, parties: ConversionParties, price: ConversionPrice
) -> _Legs:
    """The points legs on both brands' ledgers and the money legs on the settlement ledger."""
    amounts = price.amounts
    money = conversion_money(amounts, price.source_value_micros, price.destination_value_micros)
    source, target = parties.source_member, parties.destination_member
    destination = parties.destination
    shard_key = source.account_id
    wanted = {
        caller.id: shard_key % caller.shards,
        destination.id: target.account_id % destination.shards,
    }
    operator_id = None
    if money.operator_fee_micros:
        operator_id, operator_shards = await operator(session)
        wanted[operator_id] = shard_key % operator_shards
    settlement = await settlement_accounts(session, wanted)
    legs = [
        Leg(source.account_id, -amounts.points),
        Leg(source.issuance_account_id, amounts.points),
        Leg(target.issuance_account_id, -amounts.out),
        Leg(target.account_id, amounts.out),
        Leg(settlement[caller.id][0], -(money.destination_micros + money.operator_fee_micros)),
        Leg(settlement[destination.id][0], money.destination_micros),
    ]
    if operator_id is not None:
        legs.append(Leg(settlement[operator_id][0], money.operator_fee_micros))
    own = frozenset({source.account_id, source.issuance_account_id, settlement[caller.id][0]})
    return _Legs(legs, money, settlement[caller.id][1], own)


def _record(
    request: _Request,
    price: ConversionPrice,
    legs: _Legs,
    quote_id: uuid.UUID | None,
    posted: PostedTransaction,
) -> Conversion:
    """The conversion as its transaction records it (:func:`_details`) and the caller sees it."""
    return Conversion(
        transaction_id=posted.id,
        rate_version_id=price.rate.id,
        quote_id=quote_id,
        from_currency=price.rate.from_currency,
        to_currency=price.rate.to_currency,
        member_ref=request.member_ref,
        to_member_ref=request.to_member_ref,
        points=price.amounts.points,
        fee=price.amounts.fee,
        out=price.amounts.out,
        source_value_micros=price.source_value_micros,
        destination_value_micros=price.destination_value_micros,
        destination_micros=legs.money.destination_micros,
        operator_fee_micros=legs.money.operator_fee_micros,
        settlement_currency=legs.settlement_currency,
        created_at=posted.created_at,
        posted=posted,
    )


def _details(
    request: _Request, price: ConversionPrice, legs: _Legs, quote_id: uuid.UUID | None
) -> dict[str, Any]:
    """The terms kept with the transaction."""
    return {
        "from_currency": price.rate.from_currency,
        "to_currency": price.rate.to_currency,
        "member_ref": request.member_ref,
        "to_member_ref": request.to_member_ref,
        "points": price.amounts.points,
        "fee": price.amounts.fee,
        "out": price.amounts.out,
        "source_value_micros": price.source_value_micros,
        "destination_value_micros": price.destination_value_micros,
        "destination_micros": legs.money.destination_micros,
        "operator_fee_micros": legs.money.operator_fee_micros,
        "settlement_currency": legs.settlement_currency,
        "quote_id": None if quote_id is None else str(quote_id),
    }


def _credited(destination: PartnerInfo, conversion: Conversion) -> tuple[Any, dict[str, Any]]:
    """The event by which the destination brand learns of the credit (its webhook), queued in
    the conversion's transaction, so that it exists exactly when the conversion does."""
    payload = {
        "transaction_id": str(conversion.transaction_id),
        "from_currency": conversion.from_currency,
        "to_currency": conversion.to_currency,
        "to_member_ref": conversion.to_member_ref,
        "points": conversion.out,
        "created_at": rfc3339(conversion.created_at),
    }
    return destination.id, payload


async def record_conversions(
    session: AsyncSession,
    posted: Sequence[tuple[PreparedConversion, PostedTransaction]],
    now: dt.datetime | None = None,
) -> list[Conversion]:
    """What conversions record once posted, for several at once (a group of requests): each
    spends its quote, if any, and all their webhook events go in one statement."""
    conversions: list[Conversion] = []
    for prepared, transaction in posted:
        if prepared.quote_id is not None:
            await claim_quote(session, prepared.quote_id, moment_of(now))
        conversions.append(
            _record(prepared.request, prepared.price, prepared.legs, prepared.quote_id, transaction)
        )
    await enqueue_events(
        session,
        "conversion.credited",
        [
            _credited(prepared.parties.destination, conversion)
            for (prepared, _), conversion in zip(posted, conversions, strict=True)
        ],
    )
    return conversions


@dataclass(frozen=True)
class PreparedConversion:
    """A conversion priced and its legs built, its quote (if any) locked and found unused:
    what the engine posts (:meth:`spec`); once posted, :meth:`posted` spends the quote and
    records the conversion. A conversion the engine refuses (a member short of points) has
    written nothing, so the transaction can go on, as group commit's does
    (``exchange.ledger.grouped``)."""

    caller: PartnerInfo
    request: _Request
    parties: ConversionParties
    price: ConversionPrice
    legs: _Legs
    quote_id: uuid.UUID | None
    reference: str | None
    idempotency_key: str | None

    def spec(self) -> TransactionSpec:
        return TransactionSpec(
            kind="convert",
            partner_id=self.caller.id,
            points=self.price.amounts.points,
            reference=self.reference,
            idempotency_key=self.idempotency_key,
            rate_version_id=self.price.rate.id,
            legs=self.legs.legs,
            member_refs={
                self.parties.source_member.account_id: self.request.member_ref,
                self.parties.destination_member.account_id: self.request.to_member_ref,
            },
            details=_details(self.request, self.price, self.legs, self.quote_id),
        )

    @property
    def own_accounts(self) -> frozenset[int]:
        """The caller's accounts among those the conversion posts on: what its answer shows."""
        return self.legs.own

    async def posted(
        self, session: AsyncSession, posted: PostedTransaction, now: dt.datetime | None = None
    ) -> Conversion:
        (conversion,) = await record_conversions(session, [(self, posted)], now)
        return conversion


@dataclass(frozen=True)
class ConversionAsk:
    """One conversion as asked: its terms, or a quote whose terms it takes."""

    caller: PartnerInfo
    member_ref: str | None
    to_partner: str | None
    """The destination brand's currency code."""
    to_member_ref: str | None
    points: int | None
    quote_id: uuid.UUID | None = None
    reference: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class _Reads:
    """What a set of conversions reads before any is decided, in a few statements for all of
    them: destination brands, members of both sides, prices in force and quoted, available
    points."""

    destinations: dict[int, PartnerInfo | DomainError]
    members: dict[tuple[uuid.UUID, str], MemberAccount]
    prices: PricesInForce
    quoted: dict[int, ConversionPrice]
    available: dict[int, int]


async def _destinations(
    session: AsyncSession, requests: dict[int, _Request]
) -> dict[int, PartnerInfo | DomainError]:
    found: dict[int, PartnerInfo | DomainError] = {}
    for index, request in requests.items():
        try:
            found[index] = await brand_by_currency(session, request.to_partner)
        except DomainError as error:
            found[index] = error
    return found


def _checked(ref: str) -> bool:
    try:
        check_member_ref(ref)
    except DomainError:
        return False
    return True


async def _read(
    session: AsyncSession, asks: Sequence[ConversionAsk], requests: dict[int, _Request],
    now: dt.datetime,
) -> _Reads:  # fmt: skip
    destinations = await _destinations(session, requests)
    wanted: list[tuple[PartnerInfo, str]] = []
    pairs: set[tuple[PartnerInfo, PartnerInfo]] = set()
    for index, request in requests.items():
        caller, destination = asks[index].caller, destinations[index]
        if _checked(request.member_ref):
            wanted.append((caller, request.member_ref))
        if isinstance(destination, PartnerInfo):
            if _checked(request.to_member_ref):
                wanted.append((destination, request.to_member_ref))
            if request.quote is None:
                pairs.add((caller, destination))
    members = await find_members_of_brands(session, wanted)
    quoted = {
        index: await quoted_price(session, request.quote)
        for index, request in requests.items()
        if request.quote is not None
    }
    sources = [
        members[found]
        for index, request in requests.items()
        if (found := (asks[index].caller.id, request.member_ref)) in members
    ]
    available = await available_points(session, [member.account_id for member in sources], now)
    prices = await prices_in_force(session, pairs, now)
    return _Reads(destinations, members, prices, quoted, available)


def _member(reads: _Reads, partner: PartnerInfo, ref: str) -> MemberAccount:
    check_member_ref(ref)
    member = reads.members.get((partner.id, ref))
    if member is None:
        raise MemberNotFound(ref)
    return member


def _ends(
    caller: PartnerInfo, request: _Request, destination: PartnerInfo | DomainError, reads: _Reads
) -> ConversionEnds:
    """:func:`exchange.pricing.quotes.conversion_ends`, its refusals in the same order, from
    what was read."""
    brand_currency(caller)
    source = _member(reads, caller, request.member_ref)
    check_member_ref(request.to_member_ref, "to_member_ref")
    if isinstance(destination, DomainError):
        raise destination
    if destination.id == caller.id:
        to_partner = request.to_partner
        raise SameBrand(f"{to_partner} points cannot be converted into {to_partner} points")
    return ConversionEnds(destination, source)


async def _decide(
    session: AsyncSession, index: int, ask: ConversionAsk, request: _Request, reads: _Reads
) -> PreparedConversion:
    """One conversion's terms checked in order, from what was read: its ends, its price, the
    points available, then (last: an answer costs a funded member of the caller's own; README,
    "Members of other brands") whether the other brand enrolled the member; then its legs."""
    caller = ask.caller
    ends = _ends(caller, request, reads.destinations[index], reads)
    price = reads.quoted.get(index)
    if price is None:
        price = priced(reads.prices, caller, ends.destination, request.points)
    available = reads.available.get(ends.source_member.account_id, 0)
    if available < request.points:
        raise InsufficientPoints(request.member_ref, available, request.points)
    target = reads.members.get((ends.destination.id, request.to_member_ref))
    if target is None:
        raise not_enrolled(caller, ends.destination, request.to_member_ref)
    parties = ConversionParties(ends.destination, ends.source_member, target)
    legs = await _legs(session, caller, parties, price)
    return PreparedConversion(
        caller, request, parties, price, legs, ask.quote_id, ask.reference, ask.idempotency_key
    )


async def prepare_conversions(
    session: AsyncSession, asks: Sequence[ConversionAsk], at: dt.datetime | None = None
) -> list[PreparedConversion | DomainError]:
    """Everything of :func:`post_conversion` before the engine, for several conversions at
    once (a group of requests), each priced at ``at`` (default now): the terms (with a quote,
    the quote's, its row locked), the parties, the price and the legs, or its refusal. What they
    read is read for all of them together; each is then decided alone."""
    now = moment_of(at)
    outcomes: list[PreparedConversion | DomainError | None] = [None] * len(asks)
    requests: dict[int, _Request] = {}
    for index, ask in enumerate(asks):
        fields = {
            "member_ref": ask.member_ref,
            "to_partner": ask.to_partner,
            "to_member_ref": ask.to_member_ref,
            "points": ask.points,
        }
        try:
            requests[index] = await _request(session, ask.caller, fields, ask.quote_id, now)
        except DomainError as error:
            outcomes[index] = error
    reads = await _read(session, asks, requests, now)
    for index, request in requests.items():
        try:
            outcomes[index] = await _decide(session, index, asks[index], request, reads)
        except DomainError as error:
            outcomes[index] = error
    return [outcome for outcome in outcomes if outcome is not None]


async def prepare_conversion(
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
) -> PreparedConversion:
    """:func:`prepare_conversions` of one; its refusal is raised."""
    ask = ConversionAsk(
        caller, member_ref, to_partner, to_member_ref, points, quote_id, reference, idempotency_key
    )
    (prepared,) = await prepare_conversions(session, [ask], at)
    if isinstance(prepared, DomainError):
        raise prepared
    return prepared


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
    prepared = await prepare_conversion(
        session, caller, member_ref, to_partner, to_member_ref, points,
        quote_id=quote_id, reference=reference, idempotency_key=idempotency_key, at=at,
    )  # fmt: skip
    posted = await post_transaction(session, prepared.spec())
    return await prepared.posted(session, posted, at)
