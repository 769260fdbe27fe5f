"""``POST /v1/batches``: up to 1 000 issue, redeem, transfer and purchase operations of the
calling brand in one signed request, for partners that post in bulk (see ``exchange.ledger.batch``).

Purchases are priced by the earn rules, a feature the ledger does not import: the route takes a
:class:`BatchPurchases` dependency, which the app provides (``exchange.purchases.batching``).

The request as a whole is idempotent like every POST (its Idempotency-Key replays the whole
answer); each operation is too, by its own ``idempotency_key``, across requests and for good.
The answer is 200 whenever the batch was taken, with each operation's outcome in order: 201 for
one posted (or replayed, ``replayed: true``), else the status and problem it would have had
alone. A request that is wrong as a whole (1 001 operations, a repeated item key, bad points, an
unknown field) is refused as a whole and posts nothing.

The answer is signed once, as a document (``receipt``), rather than once per operation: an
Ed25519 signature over a transaction costs about 50 µs, which for 1 000 of them would take as
long as posting the batch. Each transaction's own receipt is ``GET /v1/transactions/{id}``.
"""

from __future__ import annotations

import base64

import msgspec
from litestar import Controller, MediaType, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.batches import (
    BatchCreate,
    BatchIssue,
    BatchItemOut,
    BatchOut,
    BatchPurchase,
    BatchRedemption,
    BatchResults,
    BatchTransfer,
)
from exchange.contract.schemas import DocumentSignature
from exchange.ledger import batch
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import TransactionView
from exchange.ledger.receipts import posted_out, transaction_out
from exchange.openapi import IdempotentOperation, problem_responses, problem_spec
from exchange.signing import ExchangeKeys

MAX_BATCH_BODY_BYTES = 1024 * 1024
"""1 000 operations with the longest keys, refs and references fit."""

_BATCH_PROBLEMS = {
    **problem_responses(403, 409),
    403: problem_spec("not-a-brand: only a brand posts its members' points"),
    409: problem_spec("idempotency-in-flight: a request with this Idempotency-Key is running"),
    413: problem_spec("request-too-large: the body is over 1 MiB"),
    422: problem_spec(
        "invalid-request (with the field errors, e.g. 1 001 operations, points that are not a"
        " JSON integer from 1 to 10^12, an unknown type), invalid-input (a repeated item key, a"
        " transfer to the same member), invalid-amount, idempotency-conflict (the request's"
        " key); nothing is posted. The operations' own refusals are in the 200 answer"
    ),
}


class BatchPurchases:
    """Purchases in a batch: :meth:`items` prices them (an ``earn`` item each, or one carrying
    its refusal) before the batch posts, :meth:`record` keeps the orders of those that posted,
    in the same database transaction. A base class, like ``OperationPipeline``: the purchases
    feature subclasses it and the app provides it as the ``batch_purchases`` dependency."""

    async def items(
        self,
        session: AsyncSession,
        caller: PartnerInfo,
        purchases: dict[int, BatchPurchase],
    ) -> dict[int, batch.BatchItem]:
        raise NotImplementedError

    async def record(
        self,
        session: AsyncSession,
        caller: PartnerInfo,
        purchases: dict[int, BatchPurchase],
        outcome: batch.BatchOutcome,
    ) -> None:
        raise NotImplementedError


def _item(operation: BatchIssue | BatchRedemption | BatchTransfer) -> batch.BatchItem:
    if isinstance(operation, BatchTransfer):
        return batch.BatchItem(
            type="transfer",
            idempotency_key=operation.idempotency_key,
            points=operation.points,
            from_member_ref=operation.from_member_ref,
            to_member_ref=operation.to_member_ref,
            reference=operation.reference,
        )
    return batch.BatchItem(
        type="issue" if isinstance(operation, BatchIssue) else "redeem",
        idempotency_key=operation.idempotency_key,
        points=operation.points,
        member_ref=operation.member_ref,
        reference=operation.reference,
    )


def _posted(index: int, key: str, outcome: batch.ItemPosted) -> BatchItemOut:
    transaction, balances = posted_out(outcome.transaction)
    return BatchItemOut(
        index=index, idempotency_key=key, status=201, transaction=transaction, balances=balances
    )


def _replayed(index: int, key: str, outcome: batch.ItemReplayed) -> BatchItemOut:
    stored = outcome.transaction
    view = TransactionView(
        id=stored.id,
        kind=stored.kind,
        partner_id=stored.partner_id,
        points=stored.points,
        reference=stored.reference,
        reverses_id=None,
        hold_id=None,
        created_at=stored.created_at,
        postings=stored.postings,
    )
    return BatchItemOut(
        index=index,
        idempotency_key=key,
        status=201,
        replayed=True,
        transaction=transaction_out(view),
    )


def _refused(index: int, key: str, outcome: batch.ItemRefused) -> BatchItemOut:
    error = outcome.error
    return BatchItemOut(
        index=index, idempotency_key=key, status=error.status, problem=error.problem_document()
    )


def batch_out(
    keys: ExchangeKeys, items: list[batch.BatchItem], outcome: batch.BatchOutcome
) -> bytes:
    """The answer's body: the document (:class:`BatchResults`) and its ``receipt``, a
    :class:`BatchOut`. Encoded here, once: the bytes the signature covers are msgspec's sorted
    encoding of the document, and the body is those bytes with the receipt added as the last
    member, rather than a second encoding of half a megabyte by the framework."""
    results = []
    for index, (item, result) in enumerate(zip(items, outcome.items, strict=True)):
        key = item.idempotency_key
        if isinstance(result, batch.ItemPosted):
            results.append(_posted(index, key, result))
        elif isinstance(result, batch.ItemReplayed):
            results.append(_replayed(index, key, result))
        else:
            results.append(_refused(index, key, result))
    document = BatchResults(
        batch_id=outcome.batch_id,
        posted=sum(isinstance(r, batch.ItemPosted) for r in outcome.items),
        replayed=sum(isinstance(r, batch.ItemReplayed) for r in outcome.items),
        refused=sum(isinstance(r, batch.ItemRefused) for r in outcome.items),
        results=results,
    )
    # Sorted keys, no spaces, UTF-8, the same escapes: for JSON types that is byte for byte
    # ``canonical_json``, what :meth:`ExchangeKeys.sign_document` signs (building and sorting a
    # thousand transactions in Python would take ~25 ms more).
    signed = msgspec.json.encode(document, order="sorted")
    receipt = DocumentSignature(
        key_id=keys.key_id, alg="ed25519", signature=base64.b64encode(keys.sign(signed)).decode()
    )
    return b"".join((signed[:-1], b',"receipt":', msgspec.json.encode(receipt), b"}"))


class BatchesController(Controller):
    path = "/"

    @post(
        "/batches",
        operation_id="createBatch",
        summary="Post up to 1 000 issue, redeem, transfer and purchase operations, each on its own",
        description="Operations apply in order, each with its own outcome (201, or the problem"
        " it would have had alone, such as 422 insufficient-points or 404 member-not-found) and"
        " its own `idempotency_key`: an operation whose key has a transaction already replays"
        " it (`replayed: true`) and posts nothing. A request that is wrong as a whole posts"
        " nothing. `receipt` is the exchange's signature over the answer without `receipt`.",
        tags=["operations"],
        operation_class=IdempotentOperation,
        responses=_BATCH_PROBLEMS,
        status_code=200,
        request_max_body_size=MAX_BATCH_BODY_BYTES,
    )
    async def post_batch(
        self,
        data: JSONBody[BatchCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        batch_purchases: NamedDependency[BatchPurchases],
    ) -> Response[BatchOut]:
        purchases = {
            index: operation
            for index, operation in enumerate(data.operations)
            if isinstance(operation, BatchPurchase)
        }
        priced = await batch_purchases.items(db_session, caller, purchases) if purchases else {}
        items = [
            priced[index] if isinstance(operation, BatchPurchase) else _item(operation)
            for index, operation in enumerate(data.operations)
        ]
        outcome = await batch.post_batch(db_session, caller, items)
        if purchases:
            await batch_purchases.record(db_session, caller, purchases, outcome)
        body = batch_out(exchange_keys, items, outcome)
        # A BatchOut, encoded already (see batch_out): bytes go out as they are, and the
        # annotation keeps the schema in the OpenAPI document.
        return Response(body, media_type=MediaType.JSON, status_code=200)  # type: ignore[arg-type]
