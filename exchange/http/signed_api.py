"""The signed API under ``/v1``: one router carrying what every signed route shares.

A request passes, in order: the exchange's response signing (around the whole app, see
``exchange.http.response_signing``), request signature verification
(``exchange.http.signatures``), the Idempotency-Key claim on POSTs
(``exchange.http.idempotency``), the route's guards, strict decoding of the body
(:func:`decode_strictly`), then the handler, which calls a service. The request's database
session (advanced-alchemy's, one per request) is the one transaction of the request: the
idempotency layer commits it after a 2xx, the plugin's autocommit handler rolls back anything
else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Request, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ClientException, ValidationException
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.contract.types import MAX_POINTS
from exchange.errors import BadRequest, InvalidAmount
from exchange.http.group_commit import GroupCommit
from exchange.http.idempotency import IdempotencyMiddleware
from exchange.http.signatures import RequestSignatureMiddleware
from exchange.ledger.grouped import OperationPipeline
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from exchange.signing import ExchangeKeys

MAX_BODY_BYTES = 64 * 1024
"""Bodies are read whole before the signature is checked; none of ours comes near this."""


def provide_caller(request: Request[PartnerInfo, str, State]) -> PartnerInfo:
    """The partner whose key signed the request (set by the signature middleware)."""
    return request.user


def provide_idempotency_key(request: Request[PartnerInfo, str, State]) -> str:
    """The POST's Idempotency-Key, as claimed by the idempotency middleware."""
    key: str = request.state.idempotency_key
    return key


def provide_pipeline(request: Request[PartnerInfo, str, State]) -> OperationPipeline:
    """Group commit, seen from this request: its caller, key and fingerprint."""
    group_commit: GroupCommit = request.app.state.group_commit
    state = request.state
    return group_commit.for_request(
        request.user, state.idempotency_key, state.idempotency_fingerprint
    )


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_exchange_keys(state: State) -> ExchangeKeys:
    keys: ExchangeKeys = state.exchange_keys
    return keys


def provide_master_key(state: State) -> bytes:
    key: bytes = state.master_key
    return key


async def decode_strictly(request: Request[PartnerInfo, str, State]) -> None:
    """Refuse a body that a strict decoder refuses, before Litestar's own lenient conversion
    (which would take ``1.0``, ``1e3`` or ``"10"`` for an integer) hands it to the handler.
    Whatever is wrong with ``points`` is an ``invalid-amount``. A body with a repeated object
    key is a 400 on every route, whether it takes a body or not: decoders disagree on which
    of ``{"points": 1, "points": 1000000}`` counts (ours would take the last)."""
    body = await request.body()
    if not body:
        return
    _refuse_duplicate_keys(body)
    data_field = request.route_handler.parsed_data_field
    if data_field is None:
        return
    try:
        msgspec.json.decode(body, type=data_field.annotation, strict=True)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc)) from None
    except msgspec.DecodeError:
        raise ClientException("the body is not valid JSON") from None


def _refuse_duplicate_keys(body: bytes) -> None:
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise BadRequest(f"the body repeats the key {exc.args[0]!r} in an object") from None
    except (ValueError, RecursionError):
        raise ClientException("the body is not valid JSON") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return document


def _refusal(message: str) -> Exception:
    """Turn msgspec's ``"Expected `int`, got `float` - at `$.points`"`` into a problem."""
    reason, _, where = message.partition(" - at `")
    field = where.rstrip("`").removeprefix("$").removeprefix(".")
    if field == "points":
        return InvalidAmount(
            f"points must be a JSON integer from 1 to {MAX_POINTS}: {reason}", field="points"
        )
    return ValidationException(
        detail="The body is not valid",
        extra=[{"message": reason, "key": field or "body", "source": "body"}],
    )


def v1_router(
    engine: AsyncEngine,
    db_config: SQLAlchemyAsyncConfig,
    controllers: Sequence[ControllerRouterHandler],
    provided: Mapping[str, Provide] | None = None,
) -> Router:
    """The signed API over the features' ``controllers`` (the app factory names them, and the
    dependencies one feature ``provided`` for another's routes). ``engine`` serves the signature
    layer's own short transactions."""
    dependencies: dict[str, Any] = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "idempotency_key": Provide(provide_idempotency_key, sync_to_thread=False),
        "pipeline": Provide(provide_pipeline, sync_to_thread=False),
        "settings": Provide(provide_settings, sync_to_thread=False),
        "exchange_keys": Provide(provide_exchange_keys, sync_to_thread=False),
        "master_key": Provide(provide_master_key, sync_to_thread=False),
        **(provided or {}),
    }
    return Router(
        path="/v1",
        route_handlers=list(controllers),
        middleware=[RequestSignatureMiddleware(engine), IdempotencyMiddleware(db_config)],
        dependencies=dependencies,
        before_request=decode_strictly,
        request_max_body_size=MAX_BODY_BYTES,
    )
