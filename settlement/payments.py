"""Paying a batch: the operator records that its payments were made.

:func:`mark_paid` books one ``settle`` transaction through the engine: each participant's
settlement account (shard 0) moves by ``-payout_minor * unit``, so that what was paid leaves
what is owed, and the settlement accounts keep exactly the carries. The batch is then ``paid``
and never changes again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Row, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.errors import InvalidInput, SettlementAlreadyPaid, SettlementNotFound
from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
from settlement.netting import minor_unit_micros
from settlement.statements import iso_utc
from settlement.tables import account_t, batch_t, partner_t, position_t
from settlement.views import BatchView, batch_row, batch_view


async def mark_paid(session: AsyncSession, business_date: dt.date) -> BatchView:
    """Record that a batch's payments were made: book its payouts in one ``settle`` transaction
    and mark it ``paid``, after which it never changes. Paying twice is refused."""
    row = await batch_row(session, business_date, for_update=True)
    if row is None:
        raise SettlementNotFound(business_date)
    if row.status == "paid":
        raise SettlementAlreadyPaid(
            f"business date {business_date} was marked paid at {iso_utc(row.paid_at)}",
            business_date=business_date.isoformat(),
        )
    settle_transaction_id = await _book_payouts(session, row)
    await session.execute(
        update(batch_t)
        .where(batch_t.c.id == row.id)
        .values(status="paid", paid_at=utcnow(), settle_transaction_id=settle_transaction_id)
    )
    paid = await batch_row(session, business_date)
    assert paid is not None
    return await batch_view(session, paid)


async def _book_payouts(session: AsyncSession, batch: Row[Any]) -> uuid.UUID | None:
    """Post the batch's payouts as one ``settle`` transaction, initiated by the operator; its
    id, or ``None`` when nobody is paid anything."""
    unit = minor_unit_micros(batch.minor_exponent)
    payouts = (
        await session.execute(
            select(position_t.c.payout_minor, account_t.c.id)
            .join(
                account_t,
                and_(
                    account_t.c.partner_id == position_t.c.partner_id,
                    account_t.c.kind == "settlement",
                    account_t.c.ledger == batch.currency,
                    account_t.c.shard == 0,
                    account_t.c.member_id.is_(None),
                ),
            )
            .where(position_t.c.batch_id == batch.id, position_t.c.payout_minor != 0)
            .order_by(account_t.c.id)
        )
    ).all()
    if not payouts:
        return None
    operator = await session.scalar(select(partner_t.c.id).where(partner_t.c.kind == "operator"))
    if operator is None:
        raise InvalidInput("the exchange has no operator partner to book the payments to")
    business_date = batch.business_date.isoformat()
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="settle",
            partner_id=operator,
            legs=[Leg(account_id, -payout * unit) for payout, account_id in payouts],
            reference=f"settlement {business_date}",
            paired=False,
            details={"batch_id": batch.id, "business_date": business_date},
        ),
    )
    return posted.id
