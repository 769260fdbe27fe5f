"""What ``ledger verify`` checks of lots, one aggregate each: every member account's open lots
sum to its balance, every lot's consumptions add up to what it lost, and the points expiries
took from lots are the points the breakage accounts received."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.ledger.lot_models import Lot, LotConsumption
from exchange.ledger.models import Account, LedgerTransaction

account_t = cast(Table, Account.__table__)
lot_t = cast(Table, Lot.__table__)
consumption_t = cast(Table, LotConsumption.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)


async def lot_faults(connection: AsyncConnection) -> AsyncIterator[tuple[str, int | None]]:
    """``(detail, account id)`` of each fault found."""
    open_lots = (
        select(lot_t.c.account_id, func.sum(lot_t.c.remaining).label("remaining"))
        .where(lot_t.c.remaining > 0)
        .group_by(lot_t.c.account_id)
        .subquery()
    )
    in_lots = func.coalesce(open_lots.c.remaining, 0)
    uncovered = await connection.execute(
        select(account_t.c.id, account_t.c.balance, in_lots)
        .select_from(account_t.outerjoin(open_lots, open_lots.c.account_id == account_t.c.id))
        .where(account_t.c.kind == "member", account_t.c.balance != in_lots)
        .order_by(account_t.c.id)
    )
    for account_id, balance, total in uncovered:
        yield f"account {account_id} has a balance of {balance}, its open lots {total}", account_id

    taken = (
        select(consumption_t.c.lot_id, func.sum(consumption_t.c.points).label("points"))
        .group_by(consumption_t.c.lot_id)
        .subquery()
    )
    took = func.coalesce(taken.c.points, 0)
    unexplained = await connection.execute(
        select(lot_t.c.id, lot_t.c.account_id, lot_t.c.points, lot_t.c.remaining, took)
        .select_from(lot_t.outerjoin(taken, taken.c.lot_id == lot_t.c.id))
        .where(lot_t.c.points - lot_t.c.remaining != took)
    )
    for lot_id, account_id, points, remaining, total in unexplained:
        yield (
            f"lot {lot_id} of {points} points has {remaining} left, its consumptions took {total}",
            account_id,
        )

    expired = await connection.scalar(
        select(func.coalesce(func.sum(consumption_t.c.points), 0))
        .join(transaction_t, transaction_t.c.id == consumption_t.c.transaction_id)
        .where(transaction_t.c.kind == "expire")
    )
    breakage = await connection.scalar(
        select(func.coalesce(func.sum(account_t.c.balance), 0)).where(
            account_t.c.kind == "breakage"
        )
    )
    if int(expired or 0) != int(breakage or 0):
        yield f"expiries took {expired} points, the breakage accounts hold {breakage}", None
