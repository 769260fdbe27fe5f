"""Rates in force, quotes, conversions into another brand's points, and donations to charities.

A conversion answers like the other operations (the transaction as the caller sees it, the
exchange's signature over it, the member's new balance) and adds its terms: the rate version,
fee, points out and the money the source brand now owes. The destination brand reads its side
of the same transaction with ``GET /v1/transactions/{id}``. A donation's answer carries the
member's donation receipt, signed by the exchange."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.contract.schemas import (
    CharityOut,
    ConversionCreate,
    ConversionMoney,
    ConversionOut,
    ConversionTerms,
    DonationCreate,
    DonationOut,
    DonationReceiptOut,
    PricingOut,
    QuoteCreate,
    QuoteOut,
)
from exchange.errors import PartnerNotFound, UnknownCurrency
from exchange.ledger import reads as ledger
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import transaction_view
from exchange.ledger.receipts import balance_out, operation_out, sign, transaction_out
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses, problem_spec
from exchange.pricing import service as rates
from exchange.pricing.controllers import AtQuery, moment, point_value_out, rate_out
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from partners.service import get_partner, list_partners

_PRICING_422 = (
    "invalid-amount, invalid-request (with the field errors), invalid-input, unknown-currency,"
    " same-brand, member-not-enrolled, rate-not-found, point-value-not-found, below-minimum,"
    " zero-output, limit-exceeded"
)
_QUOTE_PROBLEMS = {
    **problem_responses(403, 404, 409),
    403: problem_spec("not-a-brand: only a brand converts its members' points"),
    404: problem_spec("member-not-found: the caller has no such member"),
    422: problem_spec(f"{_PRICING_422}; idempotency-conflict"),
}
_CONVERSION_PROBLEMS = {
    **_QUOTE_PROBLEMS,
    404: problem_spec("member-not-found, quote-not-found"),
    409: problem_spec("quote-used: the quote was spent already; idempotency-in-flight"),
    422: problem_spec(
        f"{_PRICING_422}, insufficient-points, quote-expired, quote-mismatch; idempotency-conflict"
    ),
    503: problem_spec("operator-not-configured: a fee needs the operator to be registered"),
}
_DONATION_PROBLEMS = {
    **problem_responses(403, 404, 409),
    403: problem_spec("not-a-brand: only a brand donates its members' points"),
    404: problem_spec("member-not-found: the caller has no such member"),
    422: problem_spec(
        "invalid-amount, invalid-request (with the field errors), not-a-charity,"
        " below-charity-minimum, point-value-not-found, insufficient-points, idempotency-conflict"
    ),
}


async def _destination_currency(session: AsyncSession, to_partner: str | None) -> str | None:
    """``to_partner`` as the service takes it: a currency code, also when given as a partner id."""
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


def _money(currency: str, destination_micros: int, operator_fee_micros: int) -> ConversionMoney:
    return ConversionMoney(
        currency=currency,
        destination_micros=destination_micros,
        operator_fee_micros=operator_fee_micros,
    )


class ConversionsController(Controller):
    tags = ["conversions"]

    @get(
        "/rates",
        operation_id="listRates",
        summary="The rates and point values in force",
        description="Each ordered pair of brands' rate version in force, and each brand's point"
        " value, at `at` (default now).",
        operation_class=SignedOperation,
        responses={**problem_responses(), 422: problem_spec("invalid-request, invalid-input")},
    )
    async def rates_in_force(
        self, db_session: NamedDependency[AsyncSession], at: AtQuery = None
    ) -> PricingOut:
        when = moment(at) or utcnow()
        return PricingOut(
            at=when,
            point_values=[
                point_value_out(v) for v in await rates.values_in_force(db_session, when)
            ],
            rates=[rate_out(r) for r in await rates.rates_in_force(db_session, when)],
        )

    @get(
        "/charities",
        operation_id="listCharities",
        summary="The charities members can donate to, with their minimum donations",
        operation_class=SignedOperation,
        responses=problem_responses(),
    )
    async def charities(self, db_session: NamedDependency[AsyncSession]) -> list[CharityOut]:
        return [
            CharityOut(id=p.id, name=p.name, min_donation_points=p.min_donation_points)
            for p in await list_partners(db_session)
            if p.kind == "charity"
        ]

    @post(
        "/quotes",
        operation_id="createQuote",
        summary="Price a conversion and hold its rate and point values for a short time",
        description="Reserves no points. Spend the quote with `POST /v1/conversions`"
        " `{quote_id}` before `expires_at`; it can be spent once.",
        operation_class=IdempotentOperation,
        responses=_QUOTE_PROBLEMS,
    )
    async def quote(
        self,
        data: JSONBody[QuoteCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> QuoteOut:
        to_partner = await _destination_currency(db_session, data.to_partner)
        assert to_partner is not None
        quote = await rates.create_quote(
            db_session, caller, data.member_ref, to_partner, data.to_member_ref, data.points,
            ttl_seconds=settings.quote_ttl_seconds,
        )  # fmt: skip
        return QuoteOut(
            quote_id=quote.id,
            rate_version_id=quote.rate_version_id,
            from_currency=quote.from_currency,
            to_currency=quote.to_currency,
            member_ref=quote.member_ref,
            to_member_ref=quote.to_member_ref,
            points=quote.points,
            fee=quote.fee,
            out=quote.out,
            source_value_micros=quote.source_value_micros,
            destination_value_micros=quote.destination_value_micros,
            money=_money(
                settings.settlement_currency, quote.destination_micros, quote.operator_fee_micros
            ),
            expires_at=quote.expires_at,
            created_at=quote.created_at,
        )

    @post(
        "/conversions",
        operation_id="createConversion",
        summary="Convert a member's points into another brand's points for a member there",
        description="`{member_ref, to_partner, to_member_ref, points}` prices at the rate in"
        " force now; `{quote_id}` at the quote's. The destination member must be enrolled at the"
        " destination brand. The source brand owes the destination brand `out` points' value"
        " and the operator the fee's.",
        operation_class=IdempotentOperation,
        responses=_CONVERSION_PROBLEMS,
    )
    async def convert(
        self,
        data: JSONBody[ConversionCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> ConversionOut:
        conversion = await rates.post_conversion(
            db_session, caller, data.member_ref,
            await _destination_currency(db_session, data.to_partner),
            data.to_member_ref, data.points,
            quote_id=data.quote_id, reference=data.reference, idempotency_key=idempotency_key,
        )  # fmt: skip
        view = await transaction_view(db_session, caller, conversion.transaction_id)
        answer = operation_out(exchange_keys, view, conversion.posted.balances)
        terms = ConversionTerms(
            rate_version_id=conversion.rate_version_id,
            quote_id=conversion.quote_id,
            from_currency=conversion.from_currency,
            to_currency=conversion.to_currency,
            member_ref=conversion.member_ref,
            to_member_ref=conversion.to_member_ref,
            points=conversion.points,
            fee=conversion.fee,
            out=conversion.out,
            source_value_micros=conversion.source_value_micros,
            destination_value_micros=conversion.destination_value_micros,
            money=_money(
                conversion.settlement_currency,
                conversion.destination_micros,
                conversion.operator_fee_micros,
            ),
        )
        return ConversionOut(
            transaction=answer.transaction,
            receipt=answer.receipt,
            conversion=terms,
            balances=answer.balances,
        )

    @post(
        "/donations",
        operation_id="createDonation",
        summary="Donate a member's points to a charity; answers with the signed donation receipt",
        description="The brand owes the charity the points' value in force now. `receipt` is"
        " the member's receipt; its `signature` is the exchange's over the receipt's other"
        " members.",
        operation_class=IdempotentOperation,
        responses=_DONATION_PROBLEMS,
    )
    async def donate(
        self,
        data: JSONBody[DonationCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> DonationOut:
        donation = await rates.post_donation(
            db_session, caller, data.member_ref, data.charity, data.points,
            reference=data.reference, idempotency_key=idempotency_key,
        )  # fmt: skip
        document = rates.donation_receipt_document(donation)
        receipt = msgspec.convert(
            {**document, "signature": exchange_keys.sign_document(document)}, DonationReceiptOut
        )
        transaction = transaction_out(await transaction_view(db_session, caller, donation.id))
        balance = await ledger.member_balance(db_session, caller, data.member_ref)
        return DonationOut(
            transaction=transaction,
            transaction_signature=sign(exchange_keys, transaction),
            receipt=receipt,
            balances=[balance_out(balance)],
        )
