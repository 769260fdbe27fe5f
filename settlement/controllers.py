"""Settlement over the signed API: each participant's statements (JSON and CSV), its webhook
address, and the operator's batches (run a day, read it, mark it paid)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.contract.schemas import DocumentSignature, RequestBody
from exchange.errors import InvalidInput
from exchange.guards import operator_only
from exchange.ledger.parties import PartnerInfo
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from settlement import service as batches
from settlement import statements
from settlement.webhooks import set_webhook_url

CSV_SUFFIX = ".csv"


class StatementSummaryOut(msgspec.Struct):
    business_date: dt.date
    batch_id: int
    status: str
    """``complete`` (payments due) or ``paid``."""
    net_micros: int
    payout_minor: int
    sha256: str
    """Of the canonical statement document."""


class StatementOut(msgspec.Struct):
    statement: dict[str, Any]
    """The statement document; ``signature`` is over its canonical JSON."""
    signature: DocumentSignature


class WebhookUpdate(RequestBody):
    url: str | None
    """Where events are POSTed (https; null removes it)."""


class WebhookOut(msgspec.Struct):
    url: str | None


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
        db_session: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=366)] = 30,
        before: Annotated[
            dt.date | None, QueryParameter(description="Page back: statements before this day.")
        ] = None,
    ) -> list[StatementSummaryOut]:
        rows = await statements.list_statements(db_session, caller.id, limit=limit, before=before)
        return [StatementSummaryOut(**row.as_dict()) for row in rows]

    @get(
        "/{business_date:str}",
        operation_id="getSettlement",
        summary="The caller's signed statement for a business day (add .csv for CSV)",
        description="`/v1/settlements/2026-11-21` answers JSON; `/v1/settlements/2026-11-21.csv`"
        " answers text/csv for finance teams, its last line a comment with the exchange's"
        " signature over the statement document.",
        operation_class=SignedOperation,
        responses=problem_responses(404),
    )
    async def get_statement(
        self,
        business_date: FromPath[str],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
    ) -> Response[Any]:
        as_csv = business_date.endswith(CSV_SUFFIX)
        day = _business_date(business_date.removesuffix(CSV_SUFFIX))
        document, signature = await statements.get_statement(db_session, caller.id, day)
        if as_csv:
            return Response(
                statements.statement_csv(document, exchange_keys),
                media_type="text/csv; charset=utf-8",
            )
        return Response(StatementOut(statement=document, signature=DocumentSignature(**signature)))


class WebhookController(Controller):
    path = "/partners/me/webhook"
    tags = ["settlement"]

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
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> WebhookOut:
        url = await set_webhook_url(
            db_session, caller.id, data.url, allow_http=settings.webhook_allow_http
        )
        # Committed here, before the answer: a PUT is not under the idempotency layer (which
        # does this for POSTs), and the plugin's after-answer commit only logs a failure, which
        # would answer 200 for a change that was never made. A failure here is a 500.
        await db_session.commit()
        return WebhookOut(url=url)


class SettlementBatchesController(Controller):
    """The operator's view of settlement."""

    path = "/settlement-batches"
    tags = ["settlement"]
    guards = [operator_only]

    @get(
        "/",
        operation_id="listSettlementBatches",
        summary="Settlement batches, newest first (operator)",
        operation_class=SignedOperation,
        responses=problem_responses(403),
    )
    async def list_batches(
        self,
        db_session: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=366)] = 30,
    ) -> list[dict[str, Any]]:
        return [row.as_dict() for row in await batches.list_batches(db_session, limit=limit)]

    @get(
        "/{business_date:date}",
        operation_id="getSettlementBatch",
        summary="A batch: gross matrix, positions, carries and payment instructions (operator)",
        operation_class=SignedOperation,
        responses=problem_responses(403, 404),
    )
    async def get_batch(
        self, business_date: FromPath[dt.date], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        return (await batches.get_batch(db_session, business_date)).as_dict()

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
        self,
        data: JSONBody[SettlementRun],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        exchange_keys: NamedDependency[ExchangeKeys],
    ) -> list[dict[str, Any]]:
        # Settlement runs in transactions of its own (under the settlement lock), not in the
        # request's: a batch is made whole or not at all, whatever happens to this request, and
        # a day run twice is the same batch. The request's transaction ends first: on SQLite it
        # holds the database's write lock, which settlement's transaction needs.
        await db_session.commit()
        engine = db_session.bind
        factory = async_sessionmaker(engine, expire_on_commit=False)
        if data.business_date is not None:
            batch = await batches.settle_day(
                factory, data.business_date, settings=settings, keys=exchange_keys
            )
            return [batch.as_dict()]
        done = await batches.settle_due(factory, settings=settings, keys=exchange_keys)
        return [batch.as_dict() for batch in done]

    @post(
        "/{business_date:date}/payment",
        operation_id="markSettlementPaid",
        summary="Record that a batch's payments were made; the batch is then immutable",
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 404, 409),
    )
    async def mark_paid(
        self, business_date: FromPath[dt.date], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        return (await batches.mark_paid(db_session, business_date)).as_dict()
