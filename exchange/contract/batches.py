"""Bodies of ``POST /v1/batches``: up to 1 000 issue, redeem, transfer and purchase operations
of one brand, each with its own idempotency key, and the answer signed as one document."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from exchange.contract.purchases import MAX_ORDER_LINES, MoneyCurrency, OrderId, OrderLine
from exchange.contract.schemas import BalanceOut, DocumentSignature, RequestBody, TransactionOut
from exchange.contract.types import MemberRef, Points, Reference

ItemKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="The item's own idempotency key (visible ASCII, such as a UUID), unique"
        " within the batch. Scoped to the partner and kept with the item's transaction: an item"
        " whose key has a transaction already replays it instead of posting again.",
    ),
]
MAX_BATCH_OPERATIONS = 1000


class BatchIssue(RequestBody, tag_field="type", tag="issue"):
    """Earn, as ``POST /v1/issuances``."""

    idempotency_key: ItemKey
    member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class BatchRedemption(RequestBody, tag_field="type", tag="redeem"):
    """Burn, as ``POST /v1/redemptions``."""

    idempotency_key: ItemKey
    member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class BatchTransfer(RequestBody, tag_field="type", tag="transfer"):
    """Move points between two members, as ``POST /v1/transfers``."""

    idempotency_key: ItemKey
    from_member_ref: MemberRef
    to_member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class BatchPurchase(RequestBody, tag_field="type", tag="purchase"):
    """An order earning points under the brand's earn rules, as ``POST /v1/purchases``."""

    idempotency_key: ItemKey
    order_id: OrderId
    member_ref: MemberRef
    currency: MoneyCurrency
    lines: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_ORDER_LINES)]


BatchOperation = BatchIssue | BatchRedemption | BatchTransfer | BatchPurchase


class BatchCreate(RequestBody):
    operations: Annotated[
        list[BatchOperation],
        msgspec.Meta(min_length=1, max_length=MAX_BATCH_OPERATIONS),
    ]
    """1 to 1000 operations, applied in this order, each told apart by its ``type``."""


class BatchItemOut(msgspec.Struct, omit_defaults=True):
    """The outcome of one operation of a batch."""

    index: int
    """The operation's place in the request, from 0."""
    idempotency_key: str
    status: int
    """As a single operation would answer: 201 posted (or replayed), else the problem's status."""
    replayed: bool = False
    """The item's key had a transaction already: that one is answered, nothing was posted."""
    transaction: TransactionOut | None = None
    """The item's transaction (posted now or replayed); ``GET /v1/transactions/{id}`` gives
    the same, with a receipt of its own."""
    balances: list[BalanceOut] | None = None
    """Posted now: the members' balances right after this item."""
    problem: dict[str, Any] | None = None
    """Refused: an RFC 9457 problem (``insufficient-points``, ``member-not-found``,
    ``idempotency-conflict``, ``limit-exceeded``) with its facts; nothing of this item posted."""


class BatchResults(msgspec.Struct):
    """Every operation's outcome, in the request's order: the document a batch's receipt signs."""

    batch_id: uuid.UUID
    """Kept on every transaction the batch posted."""
    posted: int
    replayed: int
    refused: int
    results: list[BatchItemOut]


class BatchOut(BatchResults):
    """The answer to a batch: every operation's outcome, in order, signed as one document."""

    receipt: DocumentSignature
    """The exchange's signature over this object without ``receipt`` (canonical JSON, as for
    the other signed documents)."""
