"""The log over the signed API: the latest checkpoint, inclusion and consistency proofs, and a
partner's co-signature of a checkpoint it verified."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.transparency import (
    CheckpointOut,
    ConsistencyProofOut,
    InclusionProofOut,
    WitnessCreate,
)
from exchange.errors import DomainError, InvalidInput
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import transaction_view
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from exchange.settings import Settings
from exchange.transparency import store
from exchange.transparency.checkpoints import (
    CheckpointView,
    checkpoint_at,
    first_checkpoint_including,
    latest_checkpoint,
)
from exchange.transparency.sequencer import posting_hashes_of
from exchange.transparency.witness import add_witness


class NotInLog(DomainError):
    slug = "not-in-log"
    status = 404
    title = "Not in the log at that size"


def checkpoint_out(settings: Settings, view: CheckpointView) -> CheckpointOut:
    return CheckpointOut(
        origin=settings.log_origin,
        size=view.size,
        root_hash=view.root_hash.hex(),
        note=view.note,
        witnesses=list(view.witnesses),
    )


class TransparencyController(Controller):
    tags = ["transparency"]

    @get(
        "/checkpoints/latest",
        operation_id="getLatestCheckpoint",
        summary="The newest signed checkpoint of the transaction log, with its witnesses",
        operation_class=SignedOperation,
        responses=problem_responses(404),
    )
    async def latest(
        self, db_session: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> CheckpointOut:
        view = await latest_checkpoint(db_session)
        if view is None:
            raise NotInLog("no checkpoint has been signed yet")
        return checkpoint_out(settings, view)

    @get(
        "/proofs/inclusion",
        operation_id="getInclusionProof",
        summary="Proof that a transaction is in the log's tree of a given size (RFC 9162)",
        operation_class=SignedOperation,
        responses=problem_responses(404, 422),
    )
    async def inclusion(
        self,
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        transaction: Annotated[uuid.UUID, QueryParameter(description="The transaction's id.")],
        size: Annotated[
            int | None,
            QueryParameter(
                ge=1, description="The tree size; by default the first checkpoint's holding it."
            ),
        ] = None,
    ) -> InclusionProofOut:
        view = await transaction_view(db_session, caller, transaction)
        try:
            entry = await store.entry_of(db_session, transaction)
        except store.NotInLog:
            raise NotInLog(f"transaction {transaction} is not logged yet") from None
        note = None
        if size is None:
            first = await checkpoint_at(
                db_session, await first_checkpoint_including(db_session, entry.idx) or 0
            )
            if first is None:
                raise NotInLog(f"no checkpoint holds entry {entry.idx} yet", leaf_index=entry.idx)
            size, note = first.size, first.note
        if entry.idx >= size:
            raise NotInLog(f"transaction {transaction} is entry {entry.idx}", leaf_index=entry.idx)
        if size > await store.log_size(db_session):
            raise InvalidInput("the log is not that large yet", field="size")
        hashes = (await posting_hashes_of(db_session, [transaction])).get(transaction, [])
        return InclusionProofOut(
            transaction_id=transaction,
            kind=view.kind,
            posting_hashes=[h.hex() for h in hashes],
            leaf_index=entry.idx,
            tree_size=size,
            proof=[h.hex() for h in await store.inclusion_proof(db_session, entry.idx, size)],
            checkpoint=note,
        )

    @get(
        "/proofs/consistency",
        operation_id="getConsistencyProof",
        summary="Proof that the log's tree of one size extends its tree of a smaller size",
        operation_class=SignedOperation,
        responses=problem_responses(422),
    )
    async def consistency(
        self,
        db_session: NamedDependency[AsyncSession],
        from_size: Annotated[int, QueryParameter(name="from", ge=1, description="Older size.")],
        to_size: Annotated[int, QueryParameter(name="to", ge=1, description="Newer size.")],
    ) -> ConsistencyProofOut:
        if from_size > to_size or to_size > await store.log_size(db_session):
            raise InvalidInput("need 1 <= from <= to <= the log's size", field="to")
        proof = await store.consistency_proof(db_session, from_size, to_size)
        return ConsistencyProofOut(from_size, to_size, [h.hex() for h in proof])

    @post(
        "/checkpoints/witness",
        operation_id="witnessCheckpoint",
        summary="Co-sign a checkpoint the calling partner verified",
        operation_class=IdempotentOperation,
        responses=problem_responses(422),
        status_code=201,
    )
    async def witness(
        self,
        data: JSONBody[WitnessCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> CheckpointOut:
        view = await add_witness(db_session, caller, data.size, data.signature_line)
        return checkpoint_out(settings, view)
