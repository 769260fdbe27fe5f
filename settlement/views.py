"""Reading batches: a day's batch with everything it concluded, and the list of batches.

A batch never changes once complete (but once, to ``paid``), so what is read here is what the
run wrote, and what the operator's answers (:mod:`exchange.contract.settlement`) show."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.settlement import (
    SettlementBatchOut,
    SettlementBatchSummaryOut,
    SettlementInstructionOut,
    SettlementObligationOut,
    SettlementPositionOut,
)
from exchange.errors import SettlementNotFound
from settlement.tables import batch_t, instruction_t, obligation_t, position_t


@dataclass(frozen=True)
class PositionView:
    partner_id: uuid.UUID
    gross_owed_micros: int
    gross_owing_micros: int
    net_micros: int
    carry_in_micros: int
    payout_minor: int
    carry_out_micros: int


@dataclass(frozen=True)
class InstructionView:
    seq: int
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    amount_minor: int


@dataclass(frozen=True)
class ObligationView:
    debtor_id: uuid.UUID
    creditor_id: uuid.UUID
    amount_micros: int


@dataclass(frozen=True)
class BatchView:
    """A batch as the operator sees it, with everything it concluded."""

    id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    status: str
    currency: str
    minor_exponent: int
    postings: int
    created_at: dt.datetime
    completed_at: dt.datetime | None
    paid_at: dt.datetime | None
    settle_transaction_id: uuid.UUID | None
    obligations: tuple[ObligationView, ...]
    positions: tuple[PositionView, ...]
    instructions: tuple[InstructionView, ...]

    def as_out(self) -> SettlementBatchOut:
        """The operator's answer."""
        return SettlementBatchOut(
            id=self.id,
            business_date=self.business_date,
            cutoff_at=self.cutoff_at,
            status=self.status,
            currency=self.currency,
            minor_exponent=self.minor_exponent,
            postings=self.postings,
            created_at=self.created_at,
            completed_at=self.completed_at,
            paid_at=self.paid_at,
            settle_transaction_id=self.settle_transaction_id,
            obligations=[SettlementObligationOut(**vars(o)) for o in self.obligations],
            positions=[SettlementPositionOut(**vars(p)) for p in self.positions],
            instructions=[SettlementInstructionOut(**vars(i)) for i in self.instructions],
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids and dates as strings, amounts as integers."""
        document: dict[str, Any] = msgspec.to_builtins(self.as_out())
        return document


@dataclass(frozen=True)
class BatchSummary:
    id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    status: str
    postings: int
    completed_at: dt.datetime | None
    paid_at: dt.datetime | None

    def as_out(self) -> SettlementBatchSummaryOut:
        return SettlementBatchSummaryOut(**vars(self))

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = msgspec.to_builtins(self.as_out())
        return document


async def batch_row(
    session: AsyncSession, business_date: dt.date, *, for_update: bool = False
) -> Row[Any] | None:
    """The ``settlement_batch`` row of a business date, if it has one."""
    query = select(batch_t).where(batch_t.c.business_date == business_date)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def latest_batch(session: AsyncSession) -> Row[Any] | None:
    """The row of the last business date settled."""
    return (
        await session.execute(select(batch_t).order_by(batch_t.c.business_date.desc()).limit(1))
    ).first()


async def batch_view(session: AsyncSession, row: Row[Any]) -> BatchView:
    """A batch row with its matrix, positions and instructions."""
    obligations = await session.execute(
        select(obligation_t)
        .where(obligation_t.c.batch_id == row.id)
        .order_by(obligation_t.c.debtor_partner_id, obligation_t.c.creditor_partner_id)
    )
    positions = await session.execute(
        select(position_t).where(position_t.c.batch_id == row.id).order_by(position_t.c.partner_id)
    )
    instructions = await session.execute(
        select(instruction_t)
        .where(instruction_t.c.batch_id == row.id)
        .order_by(instruction_t.c.seq)
    )
    return BatchView(
        id=row.id,
        business_date=row.business_date,
        cutoff_at=row.cutoff_at,
        status=row.status,
        currency=row.currency,
        minor_exponent=row.minor_exponent,
        postings=row.postings,
        created_at=row.created_at,
        completed_at=row.completed_at,
        paid_at=row.paid_at,
        settle_transaction_id=row.settle_transaction_id,
        obligations=tuple(
            ObligationView(o.debtor_partner_id, o.creditor_partner_id, o.amount_micros)
            for o in obligations
        ),
        positions=tuple(
            PositionView(
                p.partner_id,
                p.gross_owed_micros,
                p.gross_owing_micros,
                p.net_micros,
                p.carry_in_micros,
                p.payout_minor,
                p.carry_out_micros,
            )
            for p in positions
        ),
        instructions=tuple(
            InstructionView(i.seq, i.payer_partner_id, i.payee_partner_id, i.amount_minor)
            for i in instructions
        ),
    )


async def get_batch(session: AsyncSession, business_date: dt.date) -> BatchView:
    """The batch of a business date, with its matrix, positions and instructions."""
    row = await batch_row(session, business_date)
    if row is None:
        raise SettlementNotFound(business_date)
    return await batch_view(session, row)


async def list_batches(
    session: AsyncSession, *, limit: int = 30, before: dt.date | None = None
) -> list[BatchSummary]:
    """Batches, newest first; ``before`` pages back (exclusive)."""
    query = select(batch_t).order_by(batch_t.c.business_date.desc()).limit(max(1, min(limit, 366)))
    if before is not None:
        query = query.where(batch_t.c.business_date < before)
    return [
        BatchSummary(
            r.id, r.business_date, r.cutoff_at, r.status, r.postings, r.completed_at, r.paid_at
        )
        for r in await session.execute(query)
    ]
