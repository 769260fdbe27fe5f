"""Unsigned endpoints: liveness, readiness and the exchange's public keys. They live outside the
``/v1`` router, so the request signature middleware never sees them; their answers are still
signed by the exchange."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import PublicKey
from exchange.migrate import head_revision
from exchange.openapi import PROBLEM_MEDIA_TYPE, ProblemDetail


class Health(msgspec.Struct):
    status: str


class SystemController(Controller):
    tags = ["system"]

    @get(
        "/health",
        operation_id="health",
        summary="Liveness: the process answers",
        sync_to_thread=False,
    )
    def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="ready",
        summary="Readiness: the database answers and its schema is current",
        responses={
            503: ResponseSpec(
                ProblemDetail,
                description="service-unavailable: the database does not answer or is behind",
                media_type=PROBLEM_MEDIA_TYPE,
                generate_examples=False,
            )
        },
    )
    async def ready(self, db_session: NamedDependency[AsyncSession], state: State) -> Health:
        try:
            version = await db_session.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception as exc:
            raise ServiceUnavailableException("database unavailable") from exc
        if version != head_revision(state.settings):
            raise ServiceUnavailableException("database schema is not current")
        return Health(status="ready")

    @get(
        "/v1/keys",
        operation_id="listExchangeKeys",
        summary="The exchange's public keys, to verify what it signs",
        sync_to_thread=False,
    )
    def keys(self, state: State) -> list[PublicKey]:
        return [PublicKey(**key) for key in state.exchange_keys.public_jwks()]
