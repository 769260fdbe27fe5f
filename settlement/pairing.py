"""Who owes whom: a batch's postings become the day's gross matrix, (debtor, creditor) -> micros.

Each posting names the account it pairs with (``counterparty_account_id``, in its hash; see the
engine's design note), so the day is one aggregate per (account, counterparty), with no sort by
transaction, and the matrix is read off its few rows (:func:`pair_day`). Transactions with
several partners on both sides (the services make none) are paired by ``netting.pair_legs``,
streamed one transaction at a time; one that a cutoff cut in two (only postings stamped out of
order can be) is paired whole by the batch that takes its last posting (:func:`_pair_split`).
Nothing loops over postings in Python and no result grows with the day: the matrix has at most
``n * (n - 1)`` rows. The postings of ``settle`` transactions (the payouts booked by
:func:`settlement.payments.mark_paid`) lie in the ranges too, and add nothing and are not
counted.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import one_of
from exchange.ledger.chain import SEVERAL_COUNTERPARTIES
from settlement.netting import pair_legs
from settlement.ranges import id_bounds, in_ranges
from settlement.tables import account_t, batch_t, posting_t, range_t

Matrix = dict[tuple[str, str], int]
"""(debtor partner id, creditor partner id) -> micros."""


@dataclass
class Day:
    """What the postings of a batch come to: who owes whom, and how many there were."""

    matrix: Matrix
    postings: int


async def pair_day(session: AsyncSession, batch_id: int, currency: str) -> Day:
    """The day's (debtor, creditor) -> micros and its number of postings, in one aggregate.

    Every posting names the account it pairs with (see the engine's design note), so the day
    is summed per (account, counterparty) in one pass over the batch's ranges, with no
    sort by transaction, and the sums become the matrix (:func:`_pair_by_counterparty`).
    The postings of ``settle`` transactions name their own account, so they add nothing, and
    they are not counted. Postings marked as having several counterparties are paired by
    transaction with ``netting.pair_legs`` (:func:`_pair_by_transaction`)."""
    bounds = await id_bounds(session, batch_id)
    partner_of = {
        account_id: str(partner_id)
        for account_id, partner_id in await session.execute(
            select(account_t.c.id, account_t.c.partner_id).where(account_t.c.ledger == currency)
        )
    }
    matrix: Matrix = defaultdict(int)
    postings, by_transaction = await _pair_by_counterparty(
        session, batch_id, bounds, partner_of, matrix
    )
    settle_transactions = list(
        (
            await session.execute(
                select(batch_t.c.settle_transaction_id).where(
                    batch_t.c.settle_transaction_id.is_not(None)
                )
            )
        ).scalars()
    )
    if settle_transactions:
        postings -= await _settle_postings(session, batch_id, settle_transactions)
    if by_transaction:
        postings += await _pair_by_transaction(
            session, batch_id, bounds, partner_of, settle_transactions, matrix
        )
    return Day(dict(matrix), postings)


async def _pair_by_counterparty(
    session: AsyncSession,
    batch_id: int,
    bounds: tuple[int, int],
    partner_of: dict[int, str],
    matrix: Matrix,
) -> tuple[int, bool]:
    """Add the day's sums per (account, counterparty) to ``matrix``: a credit leg is owed by
    its counterparty's partner, a debit leg owes it; a leg that names its own partner pairs
    with no one. Returns how many postings that was, and whether any posting is marked as
    having several counterparties (those are left to :func:`_pair_by_transaction`)."""
    p = posting_t
    counterparty = p.c.counterparty_account_id
    # Per (account, counterparty): what the account was credited, and everything it moved.
    # On PostgreSQL the ``posting_pairs`` statistics (see the migrations) tell the planner how
    # few such groups there are, so that each worker sums its share of the day before they meet.
    sums = await session.execute(
        select(
            p.c.account_id,
            counterparty,
            func.sum(p.c.amount).filter(p.c.amount > 0),
            func.sum(p.c.amount),
            func.count(),
        )
        .select_from(in_ranges(batch_id))
        .where(p.c.id.between(*bounds))
        .group_by(p.c.account_id, counterparty)
    )
    postings = 0
    by_transaction = False
    for account_id, other, credited, total, count in sums:
        if other == SEVERAL_COUNTERPARTIES:
            by_transaction = True
            continue
        postings += count
        mine, theirs = partner_of[account_id], partner_of[other]
        if mine == theirs:
            continue
        credited = int(credited or 0)
        if credited:  # owed to this account by the counterparty's partner
            matrix[theirs, mine] += credited
        if total != credited:  # owed by this account to the counterparty's partner
            matrix[mine, theirs] += credited - int(total)
    return postings, by_transaction


async def _settle_postings(
    session: AsyncSession, batch_id: int, settle_transactions: list[uuid.UUID]
) -> int:
    """How many of the batch's postings (counted by :func:`_pair_by_counterparty`) belong to
    ``settle`` transactions, which a batch does not count."""
    p = posting_t
    count = await session.scalar(
        select(func.count())
        .select_from(in_ranges(batch_id))
        .where(
            one_of(session, p.c.transaction_id, settle_transactions),
            p.c.counterparty_account_id != SEVERAL_COUNTERPARTIES,
        )
    )
    return int(count or 0)


async def _pair_by_transaction(
    session: AsyncSession,
    batch_id: int,
    bounds: tuple[int, int],
    partner_of: dict[int, str],
    settle_transactions: list[uuid.UUID],
    matrix: Matrix,
) -> int:
    """Pair, transaction by transaction, the batch's postings that name no single counterparty
    (several partners on both sides), adding to ``matrix``; returns how many there were.
    Streamed in transaction order, one transaction in memory at a time."""
    p = posting_t
    conditions = [p.c.counterparty_account_id == SEVERAL_COUNTERPARTIES, p.c.id.between(*bounds)]
    if settle_transactions:
        conditions.append(p.c.transaction_id.not_in(settle_transactions))
    rows = await session.stream(
        select(p.c.transaction_id, p.c.account_id, p.c.amount)
        .select_from(in_ranges(batch_id))
        .where(*conditions)
        .order_by(p.c.transaction_id)
    )
    current: uuid.UUID | None = None
    amounts: dict[str, int] = defaultdict(int)
    count = 0
    split: list[uuid.UUID] = []

    def pair() -> None:
        nets = {partner: amount for partner, amount in amounts.items() if amount}
        if sum(nets.values()):
            assert current is not None
            split.append(current)  # only part of it is in this batch: see _pair_split
            return
        _add_pairs(matrix, nets)

    async for transaction_id, account_id, amount in rows:
        if transaction_id != current and amounts:
            pair()
            amounts.clear()
        current = transaction_id
        amounts[partner_of[account_id]] += int(amount)
        count += 1
    if amounts:
        pair()
    for transaction_id in split:
        await _pair_split(session, batch_id, transaction_id, partner_of, matrix)
    return count


async def _pair_split(
    session: AsyncSession,
    batch_id: int,
    transaction_id: uuid.UUID,
    partner_of: dict[int, str],
    matrix: Matrix,
) -> None:
    """A transaction paired by transaction whose postings fall into two batches. Its postings
    are stamped together, so that happens only when they were not stamped in sequence order
    (a clock that stepped back). Each posting is
    still in exactly one batch; the transaction is paired whole, once, by the batch that
    takes the last of its postings (the ranges up to it cover them all), and not before."""
    p, r = posting_t, range_t
    legs = (
        await session.execute(
            select(p.c.account_id, p.c.seq, p.c.amount).where(
                p.c.transaction_id == transaction_id,
                one_of(session, p.c.account_id, sorted(partner_of)),
            )
        )
    ).all()
    for account_id, seq, _ in legs:
        covered = await session.scalar(
            select(func.max(r.c.through_seq)).where(
                r.c.account_id == account_id, r.c.batch_id <= batch_id
            )
        )
        if (covered or 0) < seq:
            return  # a later batch takes the rest, and pairs it then
    nets: dict[str, int] = defaultdict(int)
    for account_id, _, amount in legs:
        nets[partner_of[account_id]] += int(amount)
    _add_pairs(matrix, {partner: amount for partner, amount in nets.items() if amount})


def _add_pairs(matrix: Matrix, nets: dict[str, int]) -> None:
    """One transaction's partner nets, paired by ``pair_legs``, into the day's matrix."""
    for o in pair_legs(nets):
        matrix[o.debtor, o.creditor] += o.amount_micros
