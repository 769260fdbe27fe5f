"""What settlement's controllers are given (as Litestar ``Provide`` dependencies): one service
per resource, each over the request's database session, answering the contract's Structs.

The request's session is its one transaction, committed before the answer leaves by the layer
that owns it (the idempotency layer, for a POST). Two services differ, and say why:
:class:`SettlementRuns` settles in transactions of its own, and :func:`provide_webhooks` commits
the PUT it serves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.contract.settlement import (
    SettlementBatchOut,
    SettlementBatchSummaryOut,
    StatementSummaryOut,
    WebhookDeliveryOut,
    WebhookOut,
)
from exchange.db import session_maker
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from settlement import statements, views
from settlement.payments import mark_paid
from settlement.runs import settle_day, settle_due
from settlement.webhook_addresses import WebhookPolicy
from settlement.webhooks import list_deliveries, replay_delivery, set_webhook_url


class SettlementBatches:
    """The operator's batches: read them, and mark one paid."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_batches(self, *, limit: int) -> list[SettlementBatchSummaryOut]:
        return [row.as_out() for row in await views.list_batches(self.session, limit=limit)]

    async def get(self, business_date: dt.date) -> SettlementBatchOut:
        return (await views.get_batch(self.session, business_date)).as_out()

    async def mark_paid(self, business_date: dt.date) -> SettlementBatchOut:
        return (await mark_paid(self.session, business_date)).as_out()


class SettlementRuns:
    """Running settlement on the operator's request."""

    def __init__(
        self,
        request_session: AsyncSession,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        keys: ExchangeKeys,
    ) -> None:
        self.request_session = request_session
        self.sessions = sessions
        self.settings = settings
        self.keys = keys

    async def run(self, business_date: dt.date | None) -> list[SettlementBatchOut]:
        """Settle ``business_date``, or every day that is due, in order.

        Settlement runs in transactions of its own (under the settlement lock), not in the
        request's: a batch is made whole or not at all, whatever happens to this request, and
        a day run twice is the same batch. The request's transaction ends first: on SQLite it
        holds the database's write lock, which settlement's transaction needs."""
        await self.request_session.commit()
        if business_date is not None:
            batch = await settle_day(
                self.sessions, business_date, settings=self.settings, keys=self.keys
            )
            return [batch.as_out()]
        done = await settle_due(self.sessions, settings=self.settings, keys=self.keys)
        return [batch.as_out() for batch in done]


class Statements:
    """A participant's own statements."""

    def __init__(self, session: AsyncSession, keys: ExchangeKeys) -> None:
        self.session = session
        self.keys = keys

    async def list_statements(
        self, partner_id: uuid.UUID, *, limit: int, before: dt.date | None
    ) -> list[StatementSummaryOut]:
        rows = await statements.list_statements(
            self.session, partner_id, limit=limit, before=before
        )
        return [StatementSummaryOut(**vars(row)) for row in rows]

    async def get(
        self, partner_id: uuid.UUID, business_date: dt.date
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The statement document and the exchange's signature over it."""
        return await statements.get_statement(self.session, partner_id, business_date)

    def csv(self, document: dict[str, Any]) -> str:
        """The statement as CSV, its last line a comment with the signature."""
        return statements.statement_csv(document, self.keys)


class Webhooks:
    """A partner's webhook address and its deliveries."""

    def __init__(self, session: AsyncSession, *, policy: WebhookPolicy) -> None:
        self.session = session
        self.policy = policy

    async def set_url(self, partner_id: uuid.UUID, url: str | None) -> WebhookOut:
        return WebhookOut(
            url=await set_webhook_url(self.session, partner_id, url, policy=self.policy)
        )

    async def deliveries(
        self, partner_id: uuid.UUID, *, state: str | None, limit: int
    ) -> list[WebhookDeliveryOut]:
        found = await list_deliveries(self.session, partner_id, state=state, limit=limit)
        return [WebhookDeliveryOut(**dataclasses.asdict(d)) for d in found]

    async def replay(self, partner_id: uuid.UUID, event_id: uuid.UUID) -> WebhookDeliveryOut:
        revived = await replay_delivery(self.session, partner_id, event_id, now=utcnow())
        return WebhookDeliveryOut(**dataclasses.asdict(revived))


def provide_batches(db_session: NamedDependency[AsyncSession]) -> SettlementBatches:
    return SettlementBatches(db_session)


def provide_runs(
    db_session: NamedDependency[AsyncSession],
    db_engine: NamedDependency[AsyncEngine],
    settings: NamedDependency[Settings],
    exchange_keys: NamedDependency[ExchangeKeys],
) -> SettlementRuns:
    return SettlementRuns(db_session, session_maker(db_engine), settings, exchange_keys)


def provide_statements(
    db_session: NamedDependency[AsyncSession], exchange_keys: NamedDependency[ExchangeKeys]
) -> Statements:
    return Statements(db_session, exchange_keys)


async def provide_webhooks(
    db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
) -> AsyncGenerator[Webhooks, None]:
    """The webhook service for the PUT, whose change is committed once the handler has
    answered and before the answer leaves. A PUT is not under the idempotency layer (which
    does this for POSTs), and the plugin's after-answer commit only logs a failure, which
    would answer 200 for a change that was never made: a failure here is a 500. A handler
    that raises commits nothing (the exception is thrown in here, at the ``yield``)."""
    yield Webhooks(db_session, policy=WebhookPolicy.of(settings))
    await db_session.commit()


def provide_deliveries(
    db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
) -> Webhooks:
    """The webhook service for reading deliveries and for the replay POST (committed, with its
    recorded answer, by the idempotency layer)."""
    return Webhooks(db_session, policy=WebhookPolicy.of(settings))


DEPENDENCIES = {
    "batches": Provide(provide_batches, sync_to_thread=False),
    "runs": Provide(provide_runs, sync_to_thread=False),
    "statement_service": Provide(provide_statements, sync_to_thread=False),
    "webhooks": Provide(provide_webhooks),
    "deliveries": Provide(provide_deliveries, sync_to_thread=False),
}
"""Settlement's services, by the name a handler asks for."""
