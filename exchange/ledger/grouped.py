"""Single operations posted together: the ledger's half of group commit.

Issue, redeem and transfer requests of many partners, gathered by the HTTP layer's pipeline
(``exchange.http.group_commit``), are posted here in one call of the engine: their members
looked up (one query per brand), their specs built, and all of them handed to
:func:`post_transactions`, which locks every account of the group at once (in id order) and
decides each operation alone. One operation's refusal (an unknown member, too few points, a
caller that is not a brand) is its own outcome and never fails a neighbour.

The controllers see the pipeline through :class:`OperationPipeline`, so that the ledger does not
depend on the HTTP layer that implements it (idempotency records and the one commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import is_postgresql
from exchange.errors import DomainError, MemberNotFound
from exchange.ledger.engine import PostedTransaction, TransactionSpec, post_transactions
from exchange.ledger.members import MemberAccount, brand_currency, find_members
from exchange.ledger.operations import check_transfer, issue_spec, redeem_spec, transfer_spec
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref, check_points

OperationKind = Literal["issue", "redeem", "transfer"]
GROUP_COMMIT_OPT = "group_commit"
"""Route ``opt`` key of the routes whose operation goes through the :class:`OperationPipeline`."""


@dataclass(frozen=True)
class SingleOperation:
    """One request's operation. ``member_refs`` is ``(member,)``, or ``(from, to)`` for a
    transfer."""

    caller: PartnerInfo
    kind: OperationKind
    points: int
    member_refs: tuple[str, ...]
    reference: str | None
    idempotency_key: str


@dataclass(frozen=True)
class Answer:
    """What a request answers once its group has committed: the encoded body, its status, and
    whether it is the replay of an answer given before under the same Idempotency-Key."""

    status: int
    body: bytes
    replayed: bool = False


@runtime_checkable
class OperationPipeline(Protocol):
    """One request's way into group commit: it knows the caller and the request's
    Idempotency-Key, posts the operation with its group and answers once the group committed;
    a refusal of this operation alone is raised as its :class:`DomainError`. (One dependency
    for all of it: a handler with several makes the framework resolve them in a task group.)"""

    async def post(
        self, kind: OperationKind, points: int, member_refs: tuple[str, ...], reference: str | None
    ) -> Answer: ...


def _check(operation: SingleOperation) -> None:
    """What can be refused without the ledger (the HTTP layer checked the shapes already;
    this holds for any caller)."""
    brand_currency(operation.caller)
    if operation.kind == "transfer":
        source, target = operation.member_refs
        check_transfer(source, target, operation.points)
    else:
        check_points(operation.points)
        check_member_ref(operation.member_refs[0])


def _spec(operation: SingleOperation, members: Sequence[MemberAccount]) -> TransactionSpec:
    caller, points, key = operation.caller, operation.points, operation.idempotency_key
    if operation.kind == "transfer":
        source, target = members
        return transfer_spec(
            caller, source, target, points,
            reference=operation.reference, idempotency_key=key,
        )  # fmt: skip
    build = issue_spec if operation.kind == "issue" else redeem_spec
    return build(caller, members[0], points, reference=operation.reference, idempotency_key=key)


# One probe of the member index per (brand, ref), whatever the sizes (a LIMIT keeps the lateral
# subquery from being flattened into a join), then the brand's issuance shard by number.
_FIND_MEMBERS_OF_BRANDS = text(
    """
    SELECT w.partner_id, w.ref, found.member_id, found.account_id, shard.id
    FROM unnest(CAST(:partner_ids AS uuid[]), CAST(:refs AS text[]), CAST(:shards AS int[]))
        AS w(partner_id, ref, shards)
    CROSS JOIN LATERAL (
        SELECT m.id AS member_id, a.id AS account_id
        FROM member m JOIN account a ON a.member_id = m.id
        WHERE m.partner_id = w.partner_id AND m.member_ref = w.ref
        LIMIT 1
    ) AS found
    JOIN account shard ON shard.partner_id = w.partner_id AND shard.kind = 'issuance'
        AND shard.member_id IS NULL AND shard.shard = found.account_id % w.shards
    """
)


async def _members(
    session: AsyncSession, operations: Sequence[SingleOperation]
) -> dict[tuple[uuid.UUID, str], MemberAccount]:
    """Every member the operations name, by (brand, ref): on PostgreSQL in one query for all
    brands, on SQLite (in process, no round trips) with one query per brand."""
    wanted: dict[tuple[uuid.UUID, str], PartnerInfo] = {}
    for operation in operations:
        for ref in operation.member_refs:
            wanted[operation.caller.id, ref] = operation.caller
    if not wanted:
        return {}
    if is_postgresql(session):
        rows = await session.execute(
            _FIND_MEMBERS_OF_BRANDS,
            {
                "partner_ids": [partner_id for partner_id, _ in wanted],
                "refs": [ref for _, ref in wanted],
                "shards": [partner.shards for partner in wanted.values()],
            },
        )
        return {
            (partner_id, ref): MemberAccount(member_id, ref, account_id, issuance_id)
            for partner_id, ref, member_id, account_id, issuance_id in rows
        }
    by_brand: dict[uuid.UUID, tuple[PartnerInfo, set[str]]] = {}
    for (partner_id, ref), partner in wanted.items():
        by_brand.setdefault(partner_id, (partner, set()))[1].add(ref)
    found: dict[tuple[uuid.UUID, str], MemberAccount] = {}
    for partner, refs in by_brand.values():
        for ref, member in (await find_members(session, partner, refs)).items():
            found[partner.id, ref] = member
    return found


async def post_operations(
    session: AsyncSession, operations: Sequence[SingleOperation]
) -> list[PostedTransaction | DomainError]:
    """Post ``operations`` in the caller's database transaction, one outcome each, in order:
    the posted transaction, or the refusal of that operation alone."""
    outcomes: list[PostedTransaction | DomainError | None] = [None] * len(operations)
    valid: list[int] = []
    for index, operation in enumerate(operations):
        try:
            _check(operation)
        except DomainError as error:
            outcomes[index] = error
        else:
            valid.append(index)
    members = await _members(session, [operations[index] for index in valid])
    specs: list[TransactionSpec] = []
    posting: list[int] = []
    for index in valid:
        operation = operations[index]
        partner_id = operation.caller.id
        unknown = [ref for ref in operation.member_refs if (partner_id, ref) not in members]
        if unknown:
            outcomes[index] = MemberNotFound(unknown[0])
            continue
        specs.append(_spec(operation, [members[partner_id, ref] for ref in operation.member_refs]))
        posting.append(index)
    for index, result in zip(posting, await post_transactions(session, specs), strict=True):
        outcomes[index] = result
    return [outcome for outcome in outcomes if outcome is not None]
