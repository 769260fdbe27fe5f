"""Settlement over the signed API: each participant's statements (JSON and CSV), its webhook
address, and the operator's batches (run a day, read it, mark it paid). The services come from
:mod:`settlement.dependencies`; the request's transaction is committed by the layer that owns it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from exchange.contract.schemas import DocumentSignature, RequestBody
from exchange.contract.settlement import (
    SettlementBatchOut,
    SettlementBatchSummaryOut,
    StatementSummaryOut,
    WebhookDeliveryOut,
    WebhookOut,
)
from exchange.errors import InvalidInput
from exchange.guards import operator_only
from exchange.ledger.parties import PartnerInfo
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from settlement.dependencies import (
    DEPENDENCIES,
    SettlementBatches,
    SettlementRuns,
    Statements,
    Webhooks,
)

CSV_SUFFIX = ".csv"


class StatementOut(msgspec.Struct):
    statement: dict[str, Any]
    """The statement document; ``signature`` is over its canonical JSON."""
    signature: DocumentSignature


class WebhookUpdate(RequestBody):
    url: str | None
    """Where events are POSTed (https; null removes it)."""


class SettlementRun(RequestBody):
    business_date: dt.date | None = None
    """The day to settle; none settles every day that is due, in order."""


def _business_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("business_date must be YYYY-MM-DD", field="business_date") from None


class SettlementsController(Controller):
    """A participant's own statements; another's is a 404 like a day that does not exist."""

    path = "/settlements"
    tags = ["settlement"]
    dependencies = DEPENDENCIES

    @get(
        "/",
        operation_id="listSettlements",
        summary="The caller's settlement statements, newest first",
        operation_class=SignedOperation,
        responses=problem_responses(),
    )
    async def list_statements(
        self,
        caller: NamedDependency[PartnerInfo],
        statement_service: NamedDependency[Statements],
        limit: Annotated[int, QueryParameter(ge=1, le=366)] = 30,
        before: Annotated[
            dt.date | None, QueryParameter(description="Page back: statements before this day.")
        ] = None,
    ) -> list[StatementSummaryOut]:
        return await statement_service.list_statements(caller.id, limit=limit, before=before)

    @get(
        "/{business_date:str}",
        operation_id="getSettlement",
        summary="The caller's signed statement for a business day (add .csv for CSV)",
        description="`/v1/settlements/2026-11-21` answers JSON; `/v1/settlements/2026-11-21.csv`"
        " answers text/csv for finance teams, its last line a comment with the exchange's"
        " signature over the statement document.",
        operation_class=SignedOperation,
        responses={
            200: ResponseSpec(
                StatementOut,
                description="The signed statement; asked with `.csv`, the same as text/csv.",
            ),
            **problem_responses(404),
        },
    )
    async def get_statement(
        self,
        business_date: FromPath[str],
        caller: NamedDependency[PartnerInfo],
        statement_service: NamedDependency[Statements],
    ) -> Response[StatementOut | str]:
        as_csv = business_date.endswith(CSV_SUFFIX)
        day = _business_date(business_date.removesuffix(CSV_SUFFIX))
        document, signature = await statement_service.get(caller.id, day)
        if as_csv:
            return Response(statement_service.csv(document), media_type="text/csv")
        return Response(StatementOut(statement=document, signature=DocumentSignature(**signature)))


class WebhookController(Controller):
    path = "/partners/me/webhook"
    tags = ["settlement"]
    dependencies = DEPENDENCIES

    @put(
        "/",
        operation_id="setWebhook",
        summary="Register (or remove, with null) the caller's webhook address",
        operation_class=SignedOperation,
        responses=problem_responses(),
    )
    async def set_webhook(
        self,
        data: JSONBody[WebhookUpdate],
        caller: NamedDependency[PartnerInfo],
        webhooks: NamedDependency[Webhooks],
    ) -> WebhookOut:
        return await webhooks.set_url(caller.id, data.url)

    @get(
        "/deliveries",
        operation_id="listWebhookDeliveries",
        summary="The caller's webhook events, newest first, with their state and last error",
        operation_class=SignedOperation,
        responses=problem_responses(),
    )
    async def list_deliveries(
        self,
        caller: NamedDependency[PartnerInfo],
        deliveries: NamedDependency[Webhooks],
        only: Annotated[
            Literal["pending", "delivered", "dead"] | None,
            QueryParameter(name="state", description="Only deliveries in this state."),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> list[WebhookDeliveryOut]:
        return await deliveries.deliveries(caller.id, state=only, limit=limit)

    @post(
        "/deliveries/{event_id:uuid}/replay",
        operation_id="replayWebhookDelivery",
        summary="Send a dead-lettered webhook event again, from its first attempt",
        operation_class=IdempotentOperation,
        responses=problem_responses(404, 409),
        status_code=200,
    )
    async def replay_delivery(
        self,
        caller: NamedDependency[PartnerInfo],
        deliveries: NamedDependency[Webhooks],
        event_id: FromPath[uuid.UUID],
    ) -> WebhookDeliveryOut:
        return await deliveries.replay(caller.id, event_id)


class SettlementBatchesController(Controller):
    """The operator's view of settlement."""

    path = "/settlement-batches"
    tags = ["settlement"]
    guards = [operator_only]
    dependencies = DEPENDENCIES

    @get(
        "/",
        operation_id="listSettlementBatches",
        summary="Settlement batches, newest first (operator)",
        operation_class=SignedOperation,
        responses=problem_responses(403),
    )
    async def list_batches(
        self,
        batches: NamedDependency[SettlementBatches],
        limit: Annotated[int, QueryParameter(ge=1, le=366)] = 30,
    ) -> list[SettlementBatchSummaryOut]:
        return await batches.list_batches(limit=limit)

    @get(
        "/{business_date:date}",
        operation_id="getSettlementBatch",
        summary="A batch: gross matrix, positions, carries and payment instructions (operator)",
        operation_class=SignedOperation,
        responses=problem_responses(403, 404),
    )
    async def get_batch(
        self, business_date: FromPath[dt.date], batches: NamedDependency[SettlementBatches]
    ) -> SettlementBatchOut:
        return await batches.get(business_date)

    @post(
        "/",
        operation_id="runSettlement",
        summary="Settle a business day, or every day that is due, in order (operator)",
        description="Running a day that is settled returns its batch; the service also settles"
        " by itself after each cutoff.",
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 409),
    )
    async def run(
        self, data: JSONBody[SettlementRun], runs: NamedDependency[SettlementRuns]
    ) -> list[SettlementBatchOut]:
        return await runs.run(data.business_date)

    @post(
        "/{business_date:date}/payment",
        operation_id="markSettlementPaid",
        summary="Record that a batch's payments were made; the batch is then immutable",
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 404, 409),
    )
    async def mark_paid(
        self, business_date: FromPath[dt.date], batches: NamedDependency[SettlementBatches]
    ) -> SettlementBatchOut:
        return await batches.mark_paid(business_date)
