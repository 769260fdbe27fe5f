"""What a day concludes, written in the run's transaction: the gross matrix, each participant's
position with its carries, the payment instructions, the signed statements and a
``settlement.ready`` event per participant."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.outbox import enqueue_event
from settlement.netting import (
    Obligation,
    PaymentInstruction,
    Position,
    gross_matrix,
    net_positions,
    payment_instructions,
    settle_positions,
)
from settlement.pairing import Matrix
from settlement.statements import DayFacts, DonationStats, Participant
from settlement.tables import instruction_t, obligation_t, partner_t, position_t


@dataclass(frozen=True)
class Book:
    """The day's positions: gross owed and owing per participant, nets, carries, payouts."""

    gross: Matrix
    owed: dict[str, int]
    owing: dict[str, int]
    positions: list[Position]
    instructions: list[PaymentInstruction]

    def amounts(self, p: Position) -> dict[str, int]:
        """A position's amounts, named as the table's columns and the statement's fields."""
        return {
            "gross_owed_micros": self.owed[p.participant],
            "gross_owing_micros": self.owing[p.participant],
            "net_micros": p.net_micros,
            "carry_in_micros": p.carry_in_micros,
            "payout_minor": p.payout_minor,
            "carry_out_micros": p.carry_out_micros,
        }


async def write_obligations(
    session: AsyncSession, batch_id: int, matrix: Matrix
) -> list[Obligation]:
    """Write the day's matrix, its zero cells left out, and return it as obligations."""
    obligations = [Obligation(d, c, amount) for (d, c), amount in matrix.items() if amount]
    if obligations:
        await session.execute(
            insert(obligation_t),
            [
                {
                    "batch_id": batch_id,
                    "debtor_partner_id": uuid.UUID(o.debtor),
                    "creditor_partner_id": uuid.UUID(o.creditor),
                    "amount_micros": o.amount_micros,
                }
                for o in obligations
            ],
        )
    return obligations


async def carry_in(session: AsyncSession, latest: Row[Any] | None) -> dict[str, int]:
    """What the last batch carried out, per participant: the day's carry in."""
    if latest is None:
        return {}
    carried = await session.execute(
        select(position_t.c.partner_id, position_t.c.carry_out_micros).where(
            position_t.c.batch_id == latest.id, position_t.c.carry_out_micros != 0
        )
    )
    return {str(partner): amount for partner, amount in carried}


def book_day(obligations: list[Obligation], carried: dict[str, int], minor_exponent: int) -> Book:
    """Net the day's obligations with what was carried in, into positions and payments."""
    gross = gross_matrix(obligations)
    owed: dict[str, int] = defaultdict(int)
    owing: dict[str, int] = defaultdict(int)
    for (debtor, creditor), amount in gross.items():
        owing[debtor] += amount
        owed[creditor] += amount
    positions = settle_positions(net_positions(obligations), carried, minor_exponent)
    return Book(gross, owed, owing, positions, payment_instructions(positions))


async def write_positions(session: AsyncSession, batch_id: int, book: Book) -> None:
    """Write each participant's position and the payment instructions, numbered from 1."""
    if book.positions:
        await session.execute(
            insert(position_t),
            [
                {"batch_id": batch_id, "partner_id": uuid.UUID(p.participant), **book.amounts(p)}
                for p in book.positions
            ],
        )
    if book.instructions:
        await session.execute(
            insert(instruction_t),
            [
                {
                    "batch_id": batch_id,
                    "seq": seq,
                    "payer_partner_id": uuid.UUID(i.payer),
                    "payee_partner_id": uuid.UUID(i.payee),
                    "amount_minor": i.amount_minor,
                }
                for seq, i in enumerate(book.instructions, start=1)
            ],
        )


async def participants(session: AsyncSession, book: Book) -> dict[uuid.UUID, Participant]:
    """The partners with a position in the day, as their statements name them."""
    ids = [uuid.UUID(p.participant) for p in book.positions]
    rows = await session.execute(
        select(partner_t.c.id, partner_t.c.kind, partner_t.c.name, partner_t.c.currency).where(
            partner_t.c.id.in_(ids)
        )
    )
    return {row.id: Participant(row.id, row.kind, row.name, row.currency) for row in rows}


@dataclass(frozen=True)
class DayHeader:
    """Which batch and day the facts are of."""

    batch_id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    currency: str
    minor_exponent: int


def day_facts(
    header: DayHeader,
    book: Book,
    named: dict[uuid.UUID, Participant],
    donations: dict[tuple[uuid.UUID, uuid.UUID], DonationStats],
) -> DayFacts:
    """Everything the day concluded, from which every participant's statement is cut."""
    return DayFacts(
        batch_id=header.batch_id,
        business_date=header.business_date,
        cutoff_at=header.cutoff_at,
        currency=header.currency,
        minor_exponent=header.minor_exponent,
        participants=named,
        matrix={(uuid.UUID(d), uuid.UUID(c)): amount for (d, c), amount in book.gross.items()},
        positions={uuid.UUID(p.participant): book.amounts(p) for p in book.positions},
        instructions=[
            (seq, uuid.UUID(i.payer), uuid.UUID(i.payee), i.amount_minor)
            for seq, i in enumerate(book.instructions, start=1)
        ],
        donations=donations,
    )


async def announce(
    session: AsyncSession,
    header: DayHeader,
    book: Book,
    hashes: dict[uuid.UUID, str],
    now: dt.datetime,
) -> None:
    """A ``settlement.ready`` event to each participant, with its statement's hash."""
    for p in book.positions:
        partner_id = uuid.UUID(p.participant)
        await enqueue_event(
            session,
            partner_id,
            "settlement.ready",
            {
                "batch_id": header.batch_id,
                "business_date": header.business_date.isoformat(),
                "currency": header.currency,
                "net_micros": p.net_micros,
                "payout_minor": p.payout_minor,
                "carry_out_micros": p.carry_out_micros,
                "statement_sha256": hashes[partner_id],
            },
            now=now,
        )
