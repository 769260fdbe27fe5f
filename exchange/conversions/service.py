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
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339
from exchange.conversions.arithmetic import ConversionMoney, conversion_money
from exchange.errors import InsufficientPoints, InvalidInput
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance
from exchange.ledger.validation import check_points
from exchange.outbox import enqueue_event
from exchange.pricing.accounts import operator, settlement_accounts
from exchange.pricing.quotes import (
    ConversionParties,
    ConversionPrice,
    claim_quote,
    conversion_ends,
    destination_member,
    find_quote,
    price_conversion,
    quoted_price,
)
from exchange.pricing.service import moment_of


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


async def _price(
    session: AsyncSession,
    caller: PartnerInfo,
    destination: PartnerInfo,
    request: _Request,
    now: dt.datetime,
) -> ConversionPrice:
    if request.quote is None:
        return await price_conversion(session, caller, destination, request.points, now)
    return await quoted_price(session, request.quote)


async def _can_pay(session: AsyncSession, caller: PartnerInfo, request: _Request) -> None:
    """The member has the points available (the engine checks again, under its lock)."""
    balance = await member_balance(session, caller, request.member_ref)
    if balance.available < request.points:
        raise InsufficientPoints(request.member_ref, balance.available, request.points)


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
    return _Legs(legs, money, settlement[caller.id][1])


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


async def _enqueue_credit(
    session: AsyncSession, destination: PartnerInfo, conversion: Conversion
) -> None:
    """The destination brand learns of the credit by webhook; queued in this transaction, so
    the event exists exactly when the conversion does."""
    await enqueue_event(
        session,
        destination.id,
        "conversion.credited",
        {
            "transaction_id": str(conversion.transaction_id),
            "from_currency": conversion.from_currency,
            "to_currency": conversion.to_currency,
            "to_member_ref": conversion.to_member_ref,
            "points": conversion.out,
            "created_at": rfc3339(conversion.created_at),
        },
    )


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

    async def posted(
        self, session: AsyncSession, posted: PostedTransaction, now: dt.datetime | None = None
    ) -> Conversion:
        if self.quote_id is not None:
            await claim_quote(session, self.quote_id, moment_of(now))
        conversion = _record(self.request, self.price, self.legs, self.quote_id, posted)
        await _enqueue_credit(session, self.parties.destination, conversion)
        return conversion


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
    """Everything of :func:`post_conversion` before the engine: the terms (with a quote, the
    quote's, its row locked), the parties, the price and the legs."""
    now = moment_of(at)
    fields = {
        "member_ref": member_ref,
        "to_partner": to_partner,
        "to_member_ref": to_member_ref,
        "points": points,
    }
    request = await _request(session, caller, fields, quote_id, now)
    ends = await conversion_ends(
        session, caller, request.member_ref, request.to_partner, request.to_member_ref
    )
    price = await _price(session, caller, ends.destination, request, now)
    # Whether the other brand enrolled the member is asked last, once the conversion would
    # otherwise go through: an answer costs a funded member of the caller's own (README,
    # "Members of other brands").
    await _can_pay(session, caller, request)
    parties = await destination_member(session, caller, ends, request.to_member_ref)
    legs = await _legs(session, caller, parties, price)
    return PreparedConversion(
        caller, request, parties, price, legs, quote_id, reference, idempotency_key
    )


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
