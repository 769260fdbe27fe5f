"""The operator's pricing: point values and rate versions, each effective-dated and immutable.

A new version takes effect now or later and supersedes the one before from then on; nothing is
changed in place (``exchange.pricing.service``). Brands read what is in force with ``GET /v1/rates``
(``exchange.pricing.conversion_controllers``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import PointValueCreate, PointValueOut, RateCreate, RateOut
from exchange.errors import InvalidInput
from exchange.guards import operator_only
from exchange.openapi import (
    IdempotentOperation,
    SignedOperation,
    problem_responses,
    problem_spec,
)
from exchange.pricing import service as rates
from exchange.pricing.service import PointValueView, RateView

AtQuery = Annotated[
    dt.datetime | None,
    QueryParameter(
        description="RFC 3339 time, with an offset, to read the versions in force then"
        " (default: now)."
    ),
]


def moment(at: dt.datetime | None) -> dt.datetime | None:
    """A query's ``at``: a time without a zone is ambiguous, so it is refused."""
    if at is not None and at.tzinfo is None:
        raise InvalidInput("at needs a time zone offset, such as Z or +01:00", field="at")
    return at


def point_value_out(view: PointValueView) -> PointValueOut:
    return PointValueOut(
        id=view.id,
        partner_id=view.partner_id,
        currency=view.currency,
        micros_per_point=view.micros_per_point,
        effective_at=view.effective_at,
        created_at=view.created_at,
    )


def rate_out(view: RateView) -> RateOut:
    return RateOut(
        id=view.id,
        from_partner_id=view.from_partner_id,
        from_currency=view.from_currency,
        to_partner_id=view.to_partner_id,
        to_currency=view.to_currency,
        from_points=view.from_points,
        to_points=view.to_points,
        fee_bps=view.fee_bps,
        min_points=view.min_points,
        effective_at=view.effective_at,
        created_at=view.created_at,
    )


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
        view = await rates.set_point_value(
            db_session, data.currency, data.micros_per_point, effective_at=data.effective_at
        )
        return point_value_out(view)

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
        return [point_value_out(v) for v in await rates.values_in_force(db_session, moment(at))]

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
        view = await rates.set_rate(
            db_session,
            data.from_currency,
            data.to_currency,
            from_points=data.from_points,
            to_points=data.to_points,
            fee_bps=data.fee_bps,
            min_points=data.min_points,
            effective_at=data.effective_at,
        )
        return rate_out(view)
