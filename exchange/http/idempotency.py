"""Idempotency-Key on every POST of the signed API (draft-ietf-httpapi-idempotency-key-header).

A key is the partner's: the record's primary key is (partner, key). The request's fingerprint is
SHA-256 over its method, path, query and body. Before the handler runs, in the request's own
database transaction:

* PostgreSQL: ``pg_try_advisory_xact_lock`` on (partner, key). Not granted means another request
  with the key is still running: 409 ``idempotency-in-flight``. Granted, the record is read
  afterwards, so a request that committed a moment ago is seen.
* SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which serialises writers, so the
  second of two concurrent requests simply finds the first one's record.

A record with the same fingerprint is replayed (its status, content type and body, as they were
sent the first time); a different fingerprint is 422 ``idempotency-conflict``. With no record,
the handler runs; when it answers 2xx the record is inserted in the same transaction as the
postings and the transaction is committed here, before the first byte of the answer leaves.
A failed commit turns the answer into a 500, so a client never holds a receipt for something
that was not committed. Non-2xx answers are not recorded and roll back with everything else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Self, cast

import http_sf
import msgspec
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import (
    ASGIApp,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)
from litestar.utils.scope.state import ScopeState
from sqlalchemy import Table, bindparam, delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from exchange.base import utcnow
from exchange.errors import DomainError
from exchange.http.buffering import whole_answer
from exchange.http.problems import from_domain_error, internal_error, send_problem
from exchange.http.signatures import raw_path
from exchange.ledger.grouped import GROUP_COMMIT_OPT
from exchange.ledger.parties import PartnerInfo
from partners.models import IdempotencyRecord

MAX_KEY_LENGTH = 255
RETENTION = dt.timedelta(hours=24)
REDACT_OPT = "idempotency_redact"
"""Route ``opt`` key: top-level fields of the answer stored as null (a secret is shown once)."""
REPLAYED_HEADER = b"idempotent-replayed"

# A bare key: visible ASCII without the characters that structure a header value.
_BARE_KEY = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x7e]+$")

log = structlog.get_logger()


class IdempotencyKeyMissing(DomainError):
    slug = "idempotency-key-missing"
    status = 400
    title = "An Idempotency-Key header is required on every POST"


class IdempotencyKeyInvalid(DomainError):
    slug = "idempotency-key-invalid"
    status = 400
    title = "The Idempotency-Key header is not valid"


class IdempotencyConflict(DomainError):
    slug = "idempotency-conflict"
    status = 422
    title = "This Idempotency-Key was used for a different request"


class IdempotencyInFlight(DomainError):
    slug = "idempotency-in-flight"
    status = 409
    title = "A request with this Idempotency-Key is still being processed"


def parse_idempotency_key(value: str | None) -> str:
    """The key of an ``Idempotency-Key`` header: a Structured Field string (``"abc"``, as the
    draft has it) or, leniently, a bare value such as a token or a UUID (``abc``)."""
    if value is None or not value.strip():
        raise IdempotencyKeyMissing("send an Idempotency-Key header, for instance a UUID")
    value = value.strip()
    if value.startswith('"'):
        try:
            parsed = http_sf.parse(value.encode("ascii"), tltype="item")
        except ValueError:
            parsed = None
        item = parsed[0] if isinstance(parsed, tuple) else None
        key = item if isinstance(item, str) else None
    else:
        key = value if _BARE_KEY.match(value) else None
    if not key or len(key) > MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"the key must be a string of 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )
    return key


def request_fingerprint(method: str, path: str, query: bytes, body: bytes) -> bytes:
    """What makes a retry "the same request"; none of the parts can hold a NUL byte but the
    body, which comes last."""
    head = b"\x00".join((method.encode(), path.encode("latin-1"), query))
    return hashlib.sha256(head + b"\x00" + body).digest()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    content_type: str
    body: bytes


# Built once: every POST runs them (see exchange.ledger.engine on why).
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:scope, 0))")
_RECORD = select(
    IdempotencyRecord.fingerprint,
    IdempotencyRecord.response_status,
    IdempotencyRecord.response_content_type,
    IdempotencyRecord.response_body,
    IdempotencyRecord.expires_at,
).where(
    IdempotencyRecord.partner_id == bindparam("partner_id"),
    IdempotencyRecord.key == bindparam("key"),
)
_INSERT_RECORD = insert(cast(Table, IdempotencyRecord.__table__))  # Core: the ORM path costs more


def lock_scope(partner_id: Any, key: str) -> str:
    """What the advisory lock of a (partner, key) is taken on, by every path that claims one."""
    return f"idempotency:{partner_id}:{key}"


async def claim_key(
    session: AsyncSession, partner_id: Any, key: str, fingerprint: bytes
) -> StoredResponse | None:
    """Take the key for this request, or return the answer to replay (see the module note)."""
    if session.get_bind().dialect.name == "postgresql":
        granted = await session.scalar(_TRY_LOCK, {"scope": lock_scope(partner_id, key)})
        if not granted:
            raise IdempotencyInFlight(
                "the first request with this key has not finished; retry in a moment"
            )
    row = (await session.execute(_RECORD, {"partner_id": partner_id, "key": key})).first()
    if row is None:
        return None
    if row.expires_at <= utcnow():
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.partner_id == partner_id, IdempotencyRecord.key == key
            )
        )
        return None
    if row.fingerprint != fingerprint:
        raise IdempotencyConflict(
            "this key was first used for another method, path, query or body; use a new key"
        )
    return StoredResponse(row.response_status, row.response_content_type, row.response_body)


async def record_response(
    session: AsyncSession,
    partner_id: Any,
    key: str,
    fingerprint: bytes,
    response: StoredResponse,
) -> None:
    now = utcnow()
    await session.execute(
        _INSERT_RECORD,
        {
            "partner_id": partner_id,
            "key": key,
            "fingerprint": fingerprint,
            "response_status": response.status,
            "response_content_type": response.content_type,
            "response_body": response.body,
            "created_at": now,
            "expires_at": now + RETENTION,
        },
    )


async def purge_expired_records(conn: AsyncConnection, now: dt.datetime) -> int:
    """Forget answers kept past their retention; returns how many."""
    result = await conn.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return result.rowcount


def _redacted(body: bytes, fields: tuple[str, ...]) -> bytes:
    document: dict[str, Any] = msgspec.json.decode(body)
    for name in fields:
        if name in document:
            document[name] = None
    return msgspec.json.encode(document)


class IdempotencyMiddleware(ASGIMiddleware):
    """Claims, replays and records POSTs. Runs after :class:`RequestSignatureMiddleware`,
    which has authenticated the caller and cached the body."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, db_config: SQLAlchemyAsyncConfig) -> None:
        self.db_config = db_config

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # Litestar deep-copies a router when it is registered; the database handle is shared.
        return self

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        http = cast("HTTPScope", scope)
        if http["method"] != "POST":
            await next_app(scope, receive, send)
            return
        caller: PartnerInfo = http["user"]
        body = ScopeState.from_scope(scope).body
        assert isinstance(body, bytes), "the signature middleware reads the body first"
        try:
            key = parse_idempotency_key(Headers.from_scope(scope).get("idempotency-key"))
        except DomainError as error:
            await send_problem(scope, receive, send, from_domain_error(error))
            return
        fingerprint = request_fingerprint(
            http["method"], raw_path(http), http["query_string"], body
        )
        if http["route_handler"].opt.get(GROUP_COMMIT_OPT):
            # Claimed and recorded in its group's transaction (exchange.http.group_commit).
            http["state"]["idempotency_key"] = key
            http["state"]["idempotency_fingerprint"] = fingerprint
            await next_app(scope, receive, send)
            return
        session = self.db_config.provide_session(http["app"].state, scope)
        try:
            stored = await claim_key(session, caller.id, key, fingerprint)
        except DomainError as error:
            await send_problem(scope, receive, send, from_domain_error(error))
            return
        if stored is not None:
            await _replay(send, stored)
            return
        http["state"]["idempotency_key"] = key
        redact: tuple[str, ...] = http["route_handler"].opt.get(REDACT_OPT, ())

        async def record_then_send(start: HTTPResponseStartEvent, answer: bytes) -> None:
            status = start["status"]
            if 200 <= status < 300:
                content_type = Headers(start.get("headers") or []).get("content-type", "")
                record = StoredResponse(
                    status, content_type, _redacted(answer, redact) if redact else answer
                )
                try:
                    await record_response(session, caller.id, key, fingerprint, record)
                    await session.commit()
                except Exception:
                    log.exception("could not commit a request's transaction", key=key)
                    await session.rollback()
                    await send_problem(scope, receive, send, internal_error())
                    return
            await send(start)
            await send({"type": "http.response.body", "body": answer, "more_body": False})

        await next_app(scope, receive, whole_answer(send, record_then_send))


async def _replay(send: Send, stored: StoredResponse) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": stored.status,
            "headers": [
                (b"content-type", stored.content_type.encode("latin-1")),
                (b"content-length", str(len(stored.body)).encode()),
                (REPLAYED_HEADER, b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})
