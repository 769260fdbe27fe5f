"""What the operator's pages show besides the reports: pricing history, webhook deliveries,
settled positions day by day and the ledger's health. Each reads what its feature wrote, with
that feature's own functions where one exists."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.reporting import (
    ChainHeads,
    DailyPosition,
    LedgerHealth,
    RateHistory,
    WebhookDelivery,
)
from exchange.ledger.models import Account, LedgerTransaction
from exchange.outbox import outbox_t
from exchange.pricing import service as pricing
from exchange.reporting.rollup import last_closed
from exchange.transparency.checkpoints import latest_checkpoint
from exchange.transparency.store import log_size
from partners.models import Partner
from settlement.tables import batch_t, position_t

account_t = cast(Table, Account.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)
partner_t = cast(Table, Partner.__table__)

DELIVERY_STATES = ("pending", "delivered", "dead")


async def rate_history(session: AsyncSession) -> RateHistory:
    """Every point value and rate version, as the pricing API answers them."""
    return RateHistory(
        point_values=await pricing.point_value_history(session),
        rates=await pricing.rate_history(session),
    )


async def webhook_deliveries(
    session: AsyncSession, *, state: str | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    """Every partner's webhook events, newest first, in one state (``pending``,
    ``delivered``, ``dead``) or all; the states as ``settlement.webhooks`` gives them."""
    query = select(outbox_t, partner_t.c.name.label("partner_name")).join(
        partner_t, partner_t.c.id == outbox_t.c.partner_id
    )
    if state == "dead":
        query = query.where(outbox_t.c.dead_at.is_not(None))
    elif state == "delivered":
        query = query.where(outbox_t.c.delivered_at.is_not(None))
    elif state == "pending":
        query = query.where(outbox_t.c.delivered_at.is_(None), outbox_t.c.dead_at.is_(None))
    elif state is not None:
        raise ValueError(f"a delivery state is one of {', '.join(DELIVERY_STATES)}")
    rows = await session.execute(
        query.order_by(outbox_t.c.id.desc()).limit(max(1, min(limit, 1000)))
    )
    deliveries = []
    for row in rows:
        found = "delivered" if row.delivered_at else "dead" if row.dead_at else "pending"
        deliveries.append(
            WebhookDelivery(
                event_id=row.id,
                partner_id=row.partner_id,
                partner_name=row.partner_name,
                event_type=row.event_type,
                state=found,
                attempts=row.attempts,
                created_at=row.created_at,
                next_attempt_at=row.next_attempt_at if found == "pending" else None,
                delivered_at=row.delivered_at,
                dead_at=row.dead_at,
                last_error=row.last_error,
            )
        )
    return deliveries


async def settlement_positions_over_time(
    session: AsyncSession, *, first: dt.date | None = None, last: dt.date | None = None
) -> list[DailyPosition]:
    """Each participant's net position, payout and carry per settled business date, oldest
    first: the positions the batches concluded (``settlement_position``)."""
    query = (
        select(
            batch_t.c.business_date,
            batch_t.c.status,
            position_t.c.partner_id,
            partner_t.c.name,
            position_t.c.net_micros,
            position_t.c.payout_minor,
            position_t.c.carry_out_micros,
        )
        .join(position_t, position_t.c.batch_id == batch_t.c.id)
        .join(partner_t, partner_t.c.id == position_t.c.partner_id)
        .where(batch_t.c.status != "open")
    )
    if first is not None:
        query = query.where(batch_t.c.business_date >= first)
    if last is not None:
        query = query.where(batch_t.c.business_date <= last)
    rows = await session.execute(query.order_by(batch_t.c.business_date, partner_t.c.name))
    return [
        DailyPosition(
            business_date=row.business_date,
            partner_id=row.partner_id,
            name=row.name,
            net_micros=row.net_micros,
            payout_minor=row.payout_minor,
            carry_out_micros=row.carry_out_micros,
            status=row.status,
        )
        for row in rows
    ]


async def chain_heads(session: AsyncSession) -> ChainHeads:
    accounts = (
        await session.execute(select(func.count(), func.coalesce(func.sum(account_t.c.seq), 0)))
    ).one()
    transactions = (
        await session.execute(select(func.count(), func.max(transaction_t.c.created_at)))
    ).one()
    return ChainHeads(
        accounts=int(accounts[0]),
        postings=int(accounts[1]),
        transactions=int(transactions[0]),
        latest_transaction_at=transactions[1],
    )


async def ledger_health(session: AsyncSession) -> LedgerHealth:
    """The chain heads, the Merkle log's size, its latest signed checkpoint and the latest
    business date the reporting rollup has closed."""
    checkpoint = await latest_checkpoint(session)
    closed = await last_closed(session)
    return LedgerHealth(
        heads=await chain_heads(session),
        log_size=await log_size(session),
        checkpoint_size=None if checkpoint is None else checkpoint.size,
        checkpoint_root_hash=None if checkpoint is None else checkpoint.root_hash.hex(),
        checkpoint_witnesses=0 if checkpoint is None else len(checkpoint.witnesses),
        reporting_closed_through=None if closed is None else closed.business_date,
    )
