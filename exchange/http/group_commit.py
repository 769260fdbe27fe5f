"""Group commit of single signed operations: many requests, one database transaction.

Issue, redeem and transfer requests (routes with ``exchange.ledger.grouped.GROUP_COMMIT_OPT``)
open no database transaction of their own. The idempotency middleware only parses their
Idempotency-Key and fingerprints the request; the handler hands the operation to the process's
:class:`GroupCommit`, which gathers concurrent requests (``exchange.grouping``: a group is what
queued while the previous one was being written) and, for each group, in ONE transaction:

1. takes every key: on PostgreSQL one statement tries the same transaction-scoped advisory
   lock on (partner, key) that a lone POST takes (``exchange.http.idempotency``); a key held
   by a running request is 409 ``idempotency-in-flight``. A request that repeats an earlier
   one of its group replays that one's answer (a different request under the same key is in
   flight). The answers stored under the keys are read in one query: the same request is
   replayed, another is 422 ``idempotency-conflict``, as for any POST;
2. posts the rest with ``exchange.ledger.grouped.post_operations``: one set of row locks for
   the whole group, each operation refused alone (insufficient points, unknown member);
3. signs each posted operation's answer and records it under its key (one insert);
4. commits once. Nothing is answered before that commit. If anything of it fails, every
   request of the group answers 500 and nothing of the group was posted: each can be retried
   with its Idempotency-Key.

A crash after the commit and before the answers loses nothing: the retry finds the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from sqlalchemy import Table, delete, insert, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.dialect import is_postgresql
from exchange.errors import DomainError
from exchange.grouping import Grouper
from exchange.http.idempotency import (
    RETENTION,
    IdempotencyConflict,
    IdempotencyInFlight,
    lock_scope,
)
from exchange.ledger.grouped import (
    Answer,
    GroupedOperation,
    OperationKind,
    OperationPipeline,
    PreparedOperation,
    SingleOperation,
    post_operations,
)
from exchange.ledger.parties import PartnerInfo
from exchange.signing import ExchangeKeys
from partners.models import IdempotencyRecord

_record_t = cast(Table, IdempotencyRecord.__table__)
_INSERT_RECORDS = insert(_record_t)
_FAILED_LOCKS = text(
    "SELECT scope FROM unnest(CAST(:scopes AS text[])) AS scope"
    " WHERE NOT pg_try_advisory_xact_lock(hashtextextended(scope, 0))"
)


@dataclass(frozen=True)
class _Request:
    operation: GroupedOperation
    fingerprint: bytes

    @property
    def record_key(self) -> tuple[uuid.UUID, str]:
        return (self.operation.caller.id, self.operation.idempotency_key)


class GroupCommit:
    """The process's pipeline of single operations (see the module note)."""

    def __init__(self, engine: AsyncEngine, keys: ExchangeKeys, *, flushers: int = 1) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._keys = keys
        self._grouper: Grouper[_Request, Answer] = Grouper(self._flush, flushers=flushers)

    def for_request(self, caller: PartnerInfo, key: str, fingerprint: bytes) -> BoundPipeline:
        return BoundPipeline(self, caller, key, fingerprint)

    async def submit(self, operation: GroupedOperation, fingerprint: bytes) -> Answer:
        return await self._grouper.submit(_Request(operation, fingerprint))

    async def _flush(self, requests: Sequence[_Request]) -> list[Answer | BaseException]:
        async with self._sessions() as session, session.begin():
            outcomes, followers = await _claim_keys(session, requests)
            fresh = [index for index, outcome in enumerate(outcomes) if outcome is None]
            operations = [requests[i].operation for i in fresh]
            results = await post_operations(session, self._keys, operations)
            records: list[dict[str, Any]] = []
            now = utcnow()
            for index, result in zip(fresh, results, strict=True):
                if isinstance(result, DomainError):
                    outcomes[index] = result  # not recorded: a refusal can be retried
                    continue
                body = msgspec.json.encode(result)
                outcomes[index] = Answer(201, body)
                partner_id, key = requests[index].record_key
                records.append(
                    {
                        "partner_id": partner_id,
                        "key": key,
                        "fingerprint": requests[index].fingerprint,
                        "response_status": 201,
                        "response_content_type": "application/json",
                        "response_body": body,
                        "created_at": now,
                        "expires_at": now + RETENTION,
                    }
                )
            if records:
                await session.execute(_INSERT_RECORDS, records)
        return _follow(outcomes, followers)


@dataclass(frozen=True)
class BoundPipeline(OperationPipeline):
    """:class:`GroupCommit` seen from one request (what the ledger's controllers call)."""

    group_commit: GroupCommit
    caller: PartnerInfo
    idempotency_key: str
    fingerprint: bytes

    async def post(
        self, kind: OperationKind, points: int, member_refs: tuple[str, ...], reference: str | None
    ) -> Answer:
        operation = SingleOperation(
            self.caller, kind, points, member_refs, reference, self.idempotency_key
        )
        return await self.group_commit.submit(operation, self.fingerprint)

    async def post_prepared(self, operation: PreparedOperation) -> Answer:
        return await self.group_commit.submit(operation, self.fingerprint)


async def _claim_keys(
    session: AsyncSession, requests: Sequence[_Request]
) -> tuple[list[Answer | BaseException | None], dict[int, int]]:
    """Each request's key taken (``None``: go ahead), or its outcome already: in flight, a
    replay of the answer stored under it, or a conflict with another request's. A request that
    repeats an earlier one of the group (same key, same fingerprint) follows it: it answers
    with its replay once the group is decided (the second map, follower to leader)."""
    outcomes: list[Answer | BaseException | None] = [None] * len(requests)
    leaders: dict[tuple[uuid.UUID, str], int] = {}
    followers: dict[int, int] = {}
    for index, request in enumerate(requests):
        leader = leaders.setdefault(request.record_key, index)
        if leader == index:
            continue
        if requests[leader].fingerprint == request.fingerprint:
            followers[index] = leader
        outcomes[index] = _in_flight()
    if is_postgresql(session):
        scopes = [lock_scope(*request.record_key) for request in requests]
        held = set((await session.execute(_FAILED_LOCKS, {"scopes": scopes})).scalars())
        for index, scope in enumerate(scopes):
            if scope in held and outcomes[index] is None:
                outcomes[index] = _in_flight()
    stored = await _stored_answers(session, list(leaders))
    for index, request in enumerate(requests):
        record = stored.get(request.record_key)
        if record is None or outcomes[index] is not None:
            continue
        if record.fingerprint != request.fingerprint:
            outcomes[index] = IdempotencyConflict(
                "this key was first used for another method, path, query or body; use a new key"
            )
        else:
            outcomes[index] = Answer(record.response_status, record.response_body, replayed=True)
    return outcomes, followers


def _follow(
    outcomes: list[Answer | BaseException | None], followers: dict[int, int]
) -> list[Answer | BaseException]:
    """Every outcome decided: a follower gets its leader's answer, as a replay."""
    for follower, leader in followers.items():
        outcome = outcomes[leader]
        outcomes[follower] = (
            Answer(outcome.status, outcome.body, replayed=True)
            if isinstance(outcome, Answer)
            else outcome
        )
    return [outcome for outcome in outcomes if outcome is not None]


def _in_flight() -> IdempotencyInFlight:
    return IdempotencyInFlight(
        "the first request with this key has not finished; retry in a moment"
    )


async def _stored_answers(
    session: AsyncSession, record_keys: list[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], Any]:
    """The answers kept under ``record_keys``, in one query; expired ones are forgotten."""
    pair = tuple_(_record_t.c.partner_id, _record_t.c.key)
    rows = (
        await session.execute(
            select(
                _record_t.c.partner_id,
                _record_t.c.key,
                _record_t.c.fingerprint,
                _record_t.c.response_status,
                _record_t.c.response_body,
                _record_t.c.expires_at,
            ).where(pair.in_(record_keys))
        )
    ).all()
    now = utcnow()
    expired = [(row.partner_id, row.key) for row in rows if row.expires_at <= now]
    if expired:
        await session.execute(delete(_record_t).where(pair.in_(expired)))
    return {(row.partner_id, row.key): row for row in rows if row.expires_at > now}
