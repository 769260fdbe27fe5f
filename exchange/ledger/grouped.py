"""Single operations posted together: the ledger's half of group commit.

Requests of many partners, gathered by the HTTP layer's pipeline (``exchange.http.group_commit``),
are posted here in one call of the engine. Issue, redeem and transfer (:class:`SingleOperation`)
have their members looked up for the whole group at once and their specs built here; a feature's
operation (a conversion, a donation) comes as a :class:`PreparedOperation`, which reads what it
needs and builds its own spec. Then every spec goes to :func:`post_transactions`, which locks
every account of the group at once (in id order) and decides each operation alone. One
operation's refusal (an unknown member, too few points, a caller that is not a brand, no rate)
is its own outcome and never fails a neighbour.

The controllers see the pipeline through :class:`OperationPipeline`, so that the ledger does not
depend on the HTTP layer that implements it (idempotency records and the one commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import msgspec
from litestar import MediaType, Response
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import ConcurrentUse, DomainError, MemberNotFound
from exchange.ledger.engine import PostedTransaction, TransactionSpec, post_transactions
from exchange.ledger.members import MemberAccount, brand_currency, find_members_of_brands
from exchange.ledger.operations import check_transfer, issue_spec, redeem_spec, transfer_spec
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.receipts import posted_operation_out
from exchange.ledger.validation import check_member_ref, check_points
from exchange.signing import ExchangeKeys

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


class PreparedOperation(Protocol):
    """A feature's operation in a group: :meth:`prepare` reads what it needs and returns the
    spec, or raises its refusal; it writes nothing, so a refusal by the engine leaves nothing to
    undo while the group's transaction goes on. Once posted, :meth:`answer` records what the
    feature records and returns the answer. Operations that share an :attr:`exclusive_key` (a
    quote they would spend) are taken one per group, in key order, the same order in every
    group, so that the rows they lock cannot deadlock two groups.

    A class may also define ``prepare_all(session, operations)`` (a classmethod returning each
    one's spec or refusal, in order) and ``answer_all(session, [(operation, posted)], keys)``
    (their answers, in order): the group then calls each once for all its operations of that
    class, so that what they read and record costs a few statements for the group rather than
    a few each."""

    @property
    def caller(self) -> PartnerInfo: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def exclusive_key(self) -> str | None: ...

    async def prepare(self, session: AsyncSession) -> TransactionSpec: ...

    async def answer(
        self, session: AsyncSession, posted: PostedTransaction, keys: ExchangeKeys
    ) -> msgspec.Struct: ...


GroupedOperation = SingleOperation | PreparedOperation


@dataclass(frozen=True)
class Answer:
    """What a request answers once its group has committed: the encoded body, its status, and
    whether it is the replay of an answer given before under the same Idempotency-Key."""

    status: int
    body: bytes
    replayed: bool = False


def as_response(answer: Answer) -> Response[Any]:
    """The answer of a grouped request, encoded, signed and recorded already in its group's
    transaction: the bytes go out as they are. (A handler annotates its own answer type, which
    keeps the schema in the OpenAPI document.)"""
    headers = {"idempotent-replayed": "true"} if answer.replayed else None
    return Response(
        answer.body, media_type=MediaType.JSON, status_code=answer.status, headers=headers
    )


class OperationPipeline:
    """One request's way into group commit: it knows the caller and the request's
    Idempotency-Key, posts the operation with its group and answers once the group committed;
    a refusal of this operation alone is raised as its :class:`DomainError`. (One dependency
    for all of it: a handler with several makes the framework resolve them in a task group.)

    A base class rather than a Protocol: the framework checks a dependency's type on every
    request, and a runtime Protocol check walks its members each time. The HTTP layer's
    implementation subclasses it."""

    caller: PartnerInfo
    idempotency_key: str

    async def post(
        self, kind: OperationKind, points: int, member_refs: tuple[str, ...], reference: str | None
    ) -> Answer:
        raise NotImplementedError

    async def post_prepared(self, operation: PreparedOperation) -> Answer:
        raise NotImplementedError


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


async def _single_specs(
    session: AsyncSession,
    operations: Sequence[GroupedOperation],
    outcomes: list[msgspec.Struct | DomainError | None],
) -> dict[int, TransactionSpec]:
    """The specs of the group's issues, redemptions and transfers, by index; their refusals
    (shape, caller, unknown member) go into ``outcomes``."""
    valid: list[int] = []
    for index, operation in enumerate(operations):
        if not isinstance(operation, SingleOperation):
            continue
        try:
            _check(operation)
        except DomainError as error:
            outcomes[index] = error
        else:
            valid.append(index)
    singles = [cast(SingleOperation, operations[index]) for index in valid]
    members = await find_members_of_brands(
        session, [(operation.caller, ref) for operation in singles for ref in operation.member_refs]
    )
    specs: dict[int, TransactionSpec] = {}
    for index, operation in zip(valid, singles, strict=True):
        partner_id = operation.caller.id
        unknown = [ref for ref in operation.member_refs if (partner_id, ref) not in members]
        if unknown:
            outcomes[index] = MemberNotFound(unknown[0])
            continue
        specs[index] = _spec(operation, [members[partner_id, ref] for ref in operation.member_refs])
    return specs


async def _prepare(
    session: AsyncSession, operations: Sequence[PreparedOperation]
) -> list[TransactionSpec | DomainError]:
    """Specs of operations of one class: all at once where the class reads for many together
    (``prepare_all``), else one by one."""
    prepare_all = getattr(type(operations[0]), "prepare_all", None)
    if prepare_all is not None:
        return cast(list[TransactionSpec | DomainError], await prepare_all(session, operations))
    specs: list[TransactionSpec | DomainError] = []
    for operation in operations:
        try:
            specs.append(await operation.prepare(session))
        except DomainError as error:
            specs.append(error)
    return specs


async def _prepared_specs(
    session: AsyncSession,
    operations: Sequence[GroupedOperation],
    outcomes: list[msgspec.Struct | DomainError | None],
) -> dict[int, TransactionSpec]:
    """The specs of the group's prepared operations, by index, those with an exclusive key
    first, in key order; their refusals go into ``outcomes``."""
    prepared = sorted(
        (operation.exclusive_key or "", index, operation)
        for index, operation in enumerate(operations)
        if not isinstance(operation, SingleOperation)
    )
    by_class: dict[type, list[tuple[int, PreparedOperation]]] = {}
    taken: set[str] = set()
    for key, index, operation in prepared:
        if key and key in taken:
            outcomes[index] = ConcurrentUse(
                "another request being posted at this moment uses the same resource; retry"
            )
            continue
        taken.add(key)
        by_class.setdefault(type(operation), []).append((index, operation))
    specs: dict[int, TransactionSpec] = {}
    for members in by_class.values():
        results = await _prepare(session, [operation for _, operation in members])
        for (index, _), result in zip(members, results, strict=True):
            if isinstance(result, DomainError):
                outcomes[index] = result
            else:
                specs[index] = result
    return specs


async def _answers(
    session: AsyncSession,
    keys: ExchangeKeys,
    posted: Sequence[tuple[int, PreparedOperation, PostedTransaction]],
    outcomes: list[msgspec.Struct | DomainError | None],
) -> None:
    """The answers of the posted prepared operations, all of a class at once where it records
    for many together (``answer_all``)."""
    by_class: dict[type, list[tuple[int, PreparedOperation, PostedTransaction]]] = {}
    for item in posted:
        by_class.setdefault(type(item[1]), []).append(item)
    for items in by_class.values():
        answer_all = getattr(type(items[0][1]), "answer_all", None)
        if answer_all is None:
            for index, operation, result in items:
                outcomes[index] = await operation.answer(session, result, keys)
            continue
        pairs = [(operation, result) for _, operation, result in items]
        answers = await answer_all(session, pairs, keys)
        for (index, _, _), answer in zip(items, answers, strict=True):
            outcomes[index] = answer


async def post_operations(
    session: AsyncSession, keys: ExchangeKeys, operations: Sequence[GroupedOperation]
) -> list[msgspec.Struct | DomainError]:
    """Post ``operations`` in the caller's database transaction, one outcome each, in order:
    the answer of a posted operation (signed with ``keys``), or its refusal alone."""
    outcomes: list[msgspec.Struct | DomainError | None] = [None] * len(operations)
    specs = await _single_specs(session, operations, outcomes)
    specs.update(await _prepared_specs(session, operations, outcomes))
    posting = sorted(specs)
    results = await post_transactions(session, [specs[index] for index in posting])
    prepared: list[tuple[int, PreparedOperation, PostedTransaction]] = []
    for index, result in zip(posting, results, strict=True):
        operation = operations[index]
        if isinstance(result, DomainError):
            outcomes[index] = result
        elif isinstance(operation, SingleOperation):
            outcomes[index] = posted_operation_out(keys, result)
        else:
            prepared.append((index, operation, result))
    await _answers(session, keys, prepared, outcomes)
    return [outcome for outcome in outcomes if outcome is not None]
