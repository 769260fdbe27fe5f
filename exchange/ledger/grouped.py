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

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import DomainError, MemberNotFound
from exchange.ledger.engine import PostedTransaction, TransactionSpec, post_transactions
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.service import (
    MemberAccount,
    brand_currency,
    check_member_ref,
    check_points,
    check_transfer,
    find_members,
    issue_spec,
    redeem_spec,
    transfer_spec,
)

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
    """Posts one request's operation with its group and answers once the group committed; a
    refusal of this operation alone is raised as its :class:`DomainError`."""

    async def post(self, operation: SingleOperation) -> Answer: ...


def _check(operation: SingleOperation) -> None:
    """What can be refused without the ledger (the HTTP layer checked the shapes already;
    this holds for any caller)."""
    brand_currency(operation.caller)
    if operation.kind == "transfer":
        check_transfer(*operation.member_refs, operation.points)
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


async def _members(
    session: AsyncSession, operations: Sequence[SingleOperation]
) -> dict[tuple[uuid.UUID, str], MemberAccount]:
    """Every member the operations name, by (brand, ref): one query per brand."""
    wanted: dict[uuid.UUID, tuple[PartnerInfo, set[str]]] = {}
    for operation in operations:
        wanted.setdefault(operation.caller.id, (operation.caller, set()))[1].update(
            operation.member_refs
        )
    found: dict[tuple[uuid.UUID, str], MemberAccount] = {}
    for partner, refs in wanted.values():
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
