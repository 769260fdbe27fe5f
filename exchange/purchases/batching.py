"""Purchases in ``POST /v1/batches``: priced before the batch posts, recorded after.

The ledger's batch knows no earn rules; the batch route asks its ``batch_purchases`` dependency
(:class:`PurchaseBatching`, provided by the app) for an ``earn`` item per purchase. A purchase
refused before the ledger is read (no rules in force, a currency without a rate, no points, an
order that has its purchase already) is an item carrying its refusal: the batch answers it in
its place, unless its item key names a transaction already (a retried batch), which is replayed.
Two purchases of one order id in one batch refuse the whole batch, as a repeated item key does.
Once posted, each purchase's order and lines are written in the batch's database transaction.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import uuid7
from exchange.contract.batches import BatchPurchase
from exchange.contract.purchases import PurchaseCreate
from exchange.errors import DomainError, InvalidInput, OrderExists
from exchange.ledger import batch
from exchange.ledger.controllers.batches import BatchPurchases
from exchange.ledger.members import brand_currency
from exchange.ledger.parties import PartnerInfo
from exchange.purchases.models import Purchase, PurchaseLine
from exchange.purchases.service import PricedOrder, earning, price_order, purchase_row

purchase_t = cast(Table, Purchase.__table__)
line_t = cast(Table, PurchaseLine.__table__)


def _order(operation: BatchPurchase) -> PurchaseCreate:
    return PurchaseCreate(
        order_id=operation.order_id,
        member_ref=operation.member_ref,
        currency=operation.currency,
        lines=operation.lines,
    )


def _distinct_orders(purchases: dict[int, BatchPurchase]) -> None:
    first_of: dict[str, int] = {}
    for index, operation in purchases.items():
        first = first_of.setdefault(operation.order_id, index)
        if first != index:
            raise InvalidInput(
                f"operations[{index}] repeats the order_id of operations[{first}]",
                field=f"operations[{index}].order_id",
            )


async def _existing_orders(
    session: AsyncSession, caller: PartnerInfo, order_ids: list[str]
) -> set[str]:
    rows = await session.scalars(
        select(purchase_t.c.order_id).where(
            purchase_t.c.partner_id == caller.id, purchase_t.c.order_id.in_(order_ids)
        )
    )
    return set(rows)


class PurchaseBatching(BatchPurchases):
    """The purchases feature's half of a batch (see the module note)."""

    def __init__(self) -> None:
        self._priced: dict[int, tuple[uuid.UUID, PricedOrder]] = {}

    async def items(
        self,
        session: AsyncSession,
        caller: PartnerInfo,
        purchases: dict[int, BatchPurchase],
    ) -> dict[int, batch.BatchItem]:
        brand_currency(caller)
        _distinct_orders(purchases)
        existing = await _existing_orders(session, caller, [p.order_id for p in purchases.values()])
        items: dict[int, batch.BatchItem] = {}
        for index, operation in purchases.items():
            points, refusal, details = 0, None, None
            try:
                if operation.order_id in existing:
                    raise OrderExists(
                        f"order {operation.order_id} has earned its points already",
                        order_id=operation.order_id,
                    )
                priced = await price_order(session, caller, operation.currency, operation.lines)
                points = earning(priced, operation.order_id)
                purchase_id = uuid7()
                self._priced[index] = (purchase_id, priced)
                details = priced.details(operation.order_id, purchase_id, operation.member_ref)
            except DomainError as error:
                refusal = error
            items[index] = batch.BatchItem(
                type="earn",
                idempotency_key=operation.idempotency_key,
                points=points,
                member_ref=operation.member_ref,
                reference=operation.order_id,
                details=details,
                refusal=refusal,
            )
        return items

    async def record(
        self,
        session: AsyncSession,
        caller: PartnerInfo,
        purchases: dict[int, BatchPurchase],
        outcome: batch.BatchOutcome,
    ) -> None:
        """The orders and lines of the purchases that posted now (a replayed one has them)."""
        orders: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        for index, operation in purchases.items():
            result = outcome.items[index]
            if not isinstance(result, batch.ItemPosted):
                continue
            purchase_id, priced = self._priced[index]
            orders.append(
                purchase_row(caller, _order(operation), priced, purchase_id, result.transaction.id)
            )
            lines.extend(priced.line_rows(purchase_id))
        if orders:
            await session.execute(insert(purchase_t), orders)
            await session.execute(insert(line_t), lines)


def provide_batch_purchases() -> BatchPurchases:
    """A fresh one per request (it keeps the request's priced orders between its two calls)."""
    return PurchaseBatching()
