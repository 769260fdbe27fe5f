"""Pricing over HTTP: the operator sets point values and rate versions (each effective-dated and
immutable); brands read what is in force and get quotes.

A new version takes effect now or later and supersedes the one before from then on; nothing is
changed in place (:mod:`exchange.pricing.service`). Brands read what is in force with
``GET /v1/rates`` and hold a price for a short time with ``POST /v1/quotes``
(:mod:`exchange.pricing.quotes`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.contract.schemas import (
    ConversionMoney,
    PointValueCreate,
    PointValueOut,
    PricingOut,
    QuoteCreate,
    QuoteOut,
    RateCreate,
    RateOut,
)
from exchange.errors import InvalidInput
from exchange.guards import operator_only
from exchange.ledger.parties import PartnerInfo
from exchange.openapi import (
    IdempotentOperation,
    SignedOperation,
    problem_responses,
    problem_spec,
)
from exchange.pricing import service as rates
from exchange.pricing.quotes import create_quote
from exchange.settings import Settings

AtQuery = Annotated[
    dt.datetime | None,
    QueryParameter(
        description="RFC 3339 time, with an offset, to read the versions in force then"
        " (default: now)."
    ),
]


def moment(at: dt.datetime | None) -> dt.datetime | None:
    """A query's ``at``: a time without a zone is ambiguous, so it is refused.

    Litestar parses the query into a datetime but does not ask for a zone, so this check is the
    only one on that path."""
    if at is not None and at.tzinfo is None:
        raise InvalidInput("at needs a time zone offset, such as Z or +01:00", field="at")
    return at


_VERSION_CONFLICT = problem_spec(
    "version-conflict: a version for this brand or pair takes effect at that very time already;"
    " idempotency-in-flight (retry later)"
)


class PricingController(Controller):
    tags = ["pricing"]
    guards = [operator_only]

    @post(
        "/point-values",
        operation_id="setPointValue",
        summary="Operator: a brand's point value in settlement micros, from now or later",
        operation_class=IdempotentOperation,
        responses={
            **problem_responses(403, 409),
            409: _VERSION_CONFLICT,
            422: problem_spec(
                "invalid-request (with the field errors), unknown-currency, effective-in-past,"
                " idempotency-conflict"
            ),
        },
    )
    async def set_point_value(
        self, data: JSONBody[PointValueCreate], db_session: NamedDependency[AsyncSession]
    ) -> PointValueOut:
        return await rates.set_point_value(
            db_session, data.currency, data.micros_per_point, effective_at=data.effective_at
        )

    @get(
        "/point-values",
        operation_id="listPointValues",
        summary="Operator: each brand's point value in force",
        operation_class=SignedOperation,
        responses={
            **problem_responses(403),
            422: problem_spec("invalid-request, invalid-input: a bad `at`"),
        },
    )
    async def list_point_values(
        self, db_session: NamedDependency[AsyncSession], at: AtQuery = None
    ) -> list[PointValueOut]:
        return await rates.values_in_force(db_session, moment(at))

    @post(
        "/rates",
        operation_id="setRate",
        summary="Operator: a new rate version for an ordered pair of brands, from now or later",
        operation_class=IdempotentOperation,
        responses={
            **problem_responses(403, 409),
            409: _VERSION_CONFLICT,
            422: problem_spec(
                "invalid-request (with the field errors), unknown-currency, same-brand,"
                " effective-in-past, idempotency-conflict"
            ),
        },
    )
    async def set_rate(
        self, data: JSONBody[RateCreate], db_session: NamedDependency[AsyncSession]
    ) -> RateOut:
        return await rates.set_rate(
            db_session,
            data.from_currency,
            data.to_currency,
            from_points=data.from_points,
            to_points=data.to_points,
            fee_bps=data.fee_bps,
            min_points=data.min_points,
            effective_at=data.effective_at,
        )


PRICING_422 = (
    "invalid-amount, invalid-request (with the field errors), invalid-input, unknown-currency,"
    " same-brand, member-not-enrolled, rate-not-found, point-value-not-found, below-minimum,"
    " zero-output, limit-exceeded"
)
"""What a price refuses, for a quote and a conversion alike."""
QUOTE_PROBLEMS = {
    **problem_responses(403, 404, 409),
    403: problem_spec("not-a-brand: only a brand converts its members' points"),
    404: problem_spec("member-not-found: the caller has no such member"),
    422: problem_spec(f"{PRICING_422}; idempotency-conflict"),
}


class BrandPricingController(Controller):
    """What brands read and hold: the rates and values in force, and quotes."""

    # The routes were documented under "conversions" before pricing had a package of its own.
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
            point_values=await rates.values_in_force(db_session, when),
            rates=await rates.rates_in_force(db_session, when),
        )

    @post(
        "/quotes",
        operation_id="createQuote",
        summary="Price a conversion and hold its rate and point values for a short time",
        description="Reserves no points. Spend the quote with `POST /v1/conversions`"
        " `{quote_id}` before `expires_at`; it can be spent once.",
        operation_class=IdempotentOperation,
        responses=QUOTE_PROBLEMS,
    )
    async def quote(
        self,
        data: JSONBody[QuoteCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> QuoteOut:
        to_partner = await rates.destination_currency(db_session, data.to_partner)
        assert to_partner is not None
        quote = await create_quote(
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
            money=ConversionMoney(
                currency=settings.settlement_currency,
                destination_micros=quote.destination_micros,
                operator_fee_micros=quote.operator_fee_micros,
            ),
            expires_at=quote.expires_at,
            created_at=quote.created_at,
        )
