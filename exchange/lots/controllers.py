"""A brand's expiry policy and its liability over the signed API; only its own."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.lots import (
    ExpiryPoliciesOut,
    ExpiryPolicyCreate,
    ExpiryPolicyOut,
    LiabilityOut,
)
from exchange.errors import InvalidInput
from exchange.ledger.parties import PartnerInfo
from exchange.lots import service
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses, problem_spec
from exchange.settings import Settings


def _moment(value: dt.datetime | None, field: str) -> dt.datetime | None:
    """A query's time: one without a zone is ambiguous, so it is refused."""
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone offset, such as Z or +01:00", field=field)
    return value


class LotsController(Controller):
    tags = ["expiry"]

    @post(
        "/expiry-policies",
        operation_id="setExpiryPolicy",
        summary="A new version of the calling brand's expiry policy, from now or later",
        description="Effective-dated and immutable like point values: the version in force"
        " when points are credited sets their expiry.",
        operation_class=IdempotentOperation,
        responses={
            **problem_responses(403, 409),
            409: problem_spec("version-conflict: a version takes effect at that time already"),
            422: problem_spec("invalid-request, invalid-input, effective-in-past"),
        },
    )
    async def set_policy(
        self,
        data: JSONBody[ExpiryPolicyCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> ExpiryPolicyOut:
        return await service.set_expiry_policy(
            db_session, caller, data.kind, data.period, data.effective_at
        )

    @get(
        "/expiry-policies",
        operation_id="listExpiryPolicies",
        summary="The calling brand's expiry policy in force and every version",
        operation_class=SignedOperation,
        responses=problem_responses(403),
    )
    async def policies(
        self, caller: NamedDependency[PartnerInfo], db_session: NamedDependency[AsyncSession]
    ) -> ExpiryPoliciesOut:
        return await service.expiry_policies(db_session, caller)

    @get(
        "/liability",
        operation_id="getLiability",
        summary="The calling brand's points outstanding and their value, and its breakage",
        description="Points outstanding at `at` (default now) valued at the point value in"
        " force then; points expired in [`from`, `to`) (default: the month of `at` up to `at`)"
        " valued when each expired.",
        operation_class=SignedOperation,
        responses=problem_responses(403),
    )
    async def liability(
        self,
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        at: Annotated[
            dt.datetime | None, QueryParameter(description="RFC 3339: the moment (default now).")
        ] = None,
        from_at: Annotated[
            dt.datetime | None,
            QueryParameter(name="from", description="RFC 3339: the breakage period's start."),
        ] = None,
        to_at: Annotated[
            dt.datetime | None,
            QueryParameter(name="to", description="RFC 3339: the breakage period's end."),
        ] = None,
    ) -> LiabilityOut:
        return await service.liability(
            db_session,
            caller,
            settings.settlement_currency,
            at=_moment(at, "at"),
            from_at=_moment(from_at, "from"),
            to_at=_moment(to_at, "to"),
        )
