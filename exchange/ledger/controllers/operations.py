"""Ledger operations of the calling brand: issue, redeem, transfer, holds, reversals, and reading a
transaction with its signed receipt. Each answer carries the transaction, the exchange's
signature over it and the new balances of the members it touched."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import (
    HoldCapture,
    HoldCreate,
    HoldOperationOut,
    HoldOut,
    IssuanceCreate,
    OperationOut,
    RedemptionCreate,
    ReversalCreate,
    TransactionReceiptOut,
    TransferCreate,
)
from exchange.ledger import holds, reads, reversal
from exchange.ledger.engine import PostedTransaction
from exchange.ledger.grouped import (
    GROUP_COMMIT_OPT,
    OperationKind,
    OperationPipeline,
    as_response,
)
from exchange.ledger.holds import HoldView
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import hold_view, transaction_view
from exchange.ledger.receipts import (
    balance_out,
    hold_out,
    operation_out,
    receipt_out,
    sign,
    transaction_out,
)
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from exchange.settings import Settings
from exchange.signing import ExchangeKeys

_POST_PROBLEMS = problem_responses(403, 404, 409)


async def _answer(
    session: AsyncSession, caller: PartnerInfo, keys: ExchangeKeys, posted: PostedTransaction
) -> OperationOut:
    """The answer read back as the caller sees it: for a transaction that may touch another
    partner's accounts (a reversal) or a hold's; the others are made from ``posted``."""
    view = await transaction_view(session, caller, posted.id)
    return operation_out(keys, view, posted.balances)


async def _hold_answer(
    session: AsyncSession, caller: PartnerInfo, keys: ExchangeKeys, hold: HoldView
) -> HoldOperationOut:
    transaction = transaction_out(await transaction_view(session, caller, hold.transaction_id))
    balance = await reads.member_balance(session, caller, hold.member_ref)
    return HoldOperationOut(
        hold=hold_out(hold),
        transaction=transaction,
        receipt=sign(keys, transaction),
        balances=[balance_out(balance)],
    )


async def _grouped(
    pipeline: OperationPipeline,
    kind: OperationKind,
    points: int,
    member_refs: tuple[str, ...],
    reference: str | None,
) -> Response[OperationOut]:
    """Post the operation with the requests of its group (exchange.ledger.grouped); its answer
    was encoded, signed and recorded under the Idempotency-Key in the group's transaction, so
    the bytes go out as they are (the annotation keeps the schema in the OpenAPI document)."""
    return as_response(await pipeline.post(kind, points, member_refs, reference))


class OperationsController(Controller):
    path = "/"

    @post(
        "/issuances",
        operation_id="createIssuance",
        opt={GROUP_COMMIT_OPT: True},
        summary="Earn: credit a member with points of the calling brand",
        tags=["operations"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
    )
    async def issue(
        self,
        data: JSONBody[IssuanceCreate],
        pipeline: NamedDependency[OperationPipeline],
    ) -> Response[OperationOut]:
        return await _grouped(pipeline, "issue", data.points, (data.member_ref,), data.reference)

    @post(
        "/redemptions",
        operation_id="createRedemption",
        opt={GROUP_COMMIT_OPT: True},
        summary="Burn: debit a member's available points",
        tags=["operations"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
    )
    async def redeem(
        self,
        data: JSONBody[RedemptionCreate],
        pipeline: NamedDependency[OperationPipeline],
    ) -> Response[OperationOut]:
        return await _grouped(pipeline, "redeem", data.points, (data.member_ref,), data.reference)

    @post(
        "/transfers",
        operation_id="createTransfer",
        opt={GROUP_COMMIT_OPT: True},
        summary="Move points between two members of the calling brand",
        tags=["operations"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
    )
    async def transfer(
        self,
        data: JSONBody[TransferCreate],
        pipeline: NamedDependency[OperationPipeline],
    ) -> Response[OperationOut]:
        refs = (data.from_member_ref, data.to_member_ref)
        return await _grouped(pipeline, "transfer", data.points, refs, data.reference)

    @post(
        "/holds",
        operation_id="createHold",
        summary="Reserve a member's points for a two-phase redemption",
        tags=["holds"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
    )
    async def place_hold(
        self,
        data: JSONBody[HoldCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        settings: NamedDependency[Settings],
        idempotency_key: NamedDependency[str],
    ) -> HoldOperationOut:
        hold = await holds.place_hold(
            db_session, caller, data.member_ref, data.points,
            expires_in=settings.hold_ttl_seconds if data.expires_in is None else data.expires_in,
            reference=data.reference, idempotency_key=idempotency_key,
        )  # fmt: skip
        return await _hold_answer(db_session, caller, exchange_keys, hold)

    @post(
        "/holds/{hold_id:uuid}/capture",
        operation_id="captureHold",
        summary="Redeem all or part of a hold's points and close it",
        tags=["holds"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
        status_code=200,
    )
    async def capture_hold(
        self,
        hold_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
        data: JSONBody[HoldCapture | None] = None,
    ) -> HoldOperationOut:
        hold, posted = await holds.capture_hold(
            db_session, caller, hold_id, None if data is None else data.points,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        answer = await _answer(db_session, caller, exchange_keys, posted)
        return HoldOperationOut(
            hold=hold_out(hold),
            transaction=answer.transaction,
            receipt=answer.receipt,
            balances=answer.balances,
        )

    @post(
        "/holds/{hold_id:uuid}/void",
        operation_id="voidHold",
        summary="Release a hold without redeeming",
        tags=["holds"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
        status_code=200,
    )
    async def void_hold(
        self,
        hold_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> HoldOperationOut:
        hold = await holds.void_hold(db_session, caller, hold_id, idempotency_key=idempotency_key)
        return await _hold_answer(db_session, caller, exchange_keys, hold)

    @get(
        "/holds/{hold_id:uuid}",
        operation_id="getHold",
        summary="A hold of the calling brand",
        tags=["holds"],
        operation_class=SignedOperation,
        responses=problem_responses(404),
    )
    async def get_hold(
        self,
        hold_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> HoldOut:
        return hold_out(await hold_view(db_session, caller, hold_id))

    @post(
        "/transactions/{transaction_id:uuid}/reversal",
        operation_id="reverseTransaction",
        summary="Reverse all or part of a transaction the caller made",
        description="Reversals of one transaction never total more than its points.",
        tags=["transactions"],
        operation_class=IdempotentOperation,
        responses=_POST_PROBLEMS,
    )
    async def reverse(
        self,
        transaction_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
        data: JSONBody[ReversalCreate | None] = None,
    ) -> OperationOut:
        posted = await reversal.reverse(
            db_session, caller, transaction_id, None if data is None else data.points,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return await _answer(db_session, caller, exchange_keys, posted)

    @get(
        "/transactions/{transaction_id:uuid}",
        operation_id="getTransaction",
        summary="A transaction, the postings on the caller's accounts, and its signed receipt",
        tags=["transactions"],
        operation_class=SignedOperation,
        responses=problem_responses(404),
    )
    async def get_transaction(
        self,
        transaction_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
    ) -> TransactionReceiptOut:
        view = await transaction_view(db_session, caller, transaction_id)
        return receipt_out(exchange_keys, view)
