"""Nightly settlement: a business day's money postings become one batch, netted and signed.

Design note
-----------
* What a day takes. The batch for business date ``D`` (see ``settlement.calendar``) takes, per
  money account (ledger = the settlement currency), the range of its chain from where its last
  range ended to its last posting created before ``cutoff(D)`` that had committed when the batch
  was taken (``settlement_range``). The engine stamps an account's postings in sequence order,
  so that posting is found by bisection, a few index lookups per account (:func:`_take_ranges`),
  and a posting that commits after the batch was taken, though created before the cutoff,
  goes to the next batch. A transaction's postings share their stamp and commit together, so a
  transaction is not split between two batches (unless its postings were stamped out of order,
  see below). The ranges' constraints chain each account's
  ranges end to start, so no posting is ever in two batches and none is left out. The
  postings of ``settle`` transactions (the payouts booked by :func:`mark_paid`) lie in the
  ranges too, and add nothing (below) and are not counted.
* Work follows the day, not the history. The day is read as one range scan of ``posting``'s
  primary key, between the lowest and highest id of the ranges' ends (:func:`_id_bounds`).
  Settlement writes nothing per posting and never locks a ledger row (no foreign key from its
  tables to ``account`` or ``posting``), so writers never wait for it, nor it for them.
* Who owes whom. Each posting names the account it pairs with (``counterparty_account_id``, in
  its hash; see the engine's design note), so the day is one aggregate per (account,
  counterparty), with no sort by transaction, and the matrix is read off its few rows
  (:func:`_pair_day`). Transactions with several partners on both sides (the services make
  none) are paired by ``netting.pair_legs``, streamed one transaction at a time; one that a
  cutoff cut in two (only postings stamped out of order can be) is paired whole by the batch
  that takes its last posting (:func:`_pair_split`). Nothing loops over postings in Python
  and no result grows with the day: the matrix has at most ``n * (n - 1)`` rows.
* Exactly once. A day is written by one database transaction (batch, ranges, matrix,
  positions, instructions, statements, ``settlement.ready`` events), so a run that dies
  leaves nothing. Runs take a PostgreSQL advisory lock; the unique ``business_date`` is the
  backstop. Running a settled day again returns its batch. Days settle in order, each after
  the one before (``carry_in`` is the previous batch's ``carry_out``).
* Paying. :func:`mark_paid` books one ``settle`` transaction through the engine: each
  participant's settlement account (shard 0) moves by ``-payout_minor * unit``, so that what
  was paid leaves what is owed, and the settlement accounts keep exactly the carries.
"""

from __future__ import annotations

import datetime as dt
import typing
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Row,
    Table,
    and_,
    cast,
    func,
    insert,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import (
    InvalidInput,
    SettlementAlreadyPaid,
    SettlementNotDue,
    SettlementNotFound,
    SettlementOutOfOrder,
)
from exchange.ledger.engine import (
    SEVERAL_COUNTERPARTIES,
    Leg,
    TransactionSpec,
    one_of,
    post_transaction,
)
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.outbox import enqueue_event
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from partners.models import Partner
from settlement.calendar import BusinessCalendar, Calendar, last_complete_day
from settlement.models import (
    SettlementBatch,
    SettlementInstruction,
    SettlementObligation,
    SettlementPosition,
    SettlementRange,
)
from settlement.netting import (
    Obligation,
    gross_matrix,
    minor_unit_micros,
    net_positions,
    pair_legs,
    payment_instructions,
    settle_positions,
)
from settlement.statements import DayFacts, DonationStats, Participant, issue_statements

SETTLEMENT_LOCK_ID = 7_420_004
"""The PostgreSQL advisory lock every settlement run holds (any fixed number)."""

STEPS = ("ranges", "obligations", "positions", "statements")
"""What :func:`settle_day` reports to ``on_step`` as it finishes each part of a day."""

OnStep = Callable[[dt.date, str], None]

account_t = typing.cast(Table, Account.__table__)
posting_t = typing.cast(Table, Posting.__table__)
transaction_t = typing.cast(Table, LedgerTransaction.__table__)
partner_t = typing.cast(Table, Partner.__table__)
batch_t = typing.cast(Table, SettlementBatch.__table__)
range_t = typing.cast(Table, SettlementRange.__table__)
obligation_t = typing.cast(Table, SettlementObligation.__table__)
position_t = typing.cast(Table, SettlementPosition.__table__)
instruction_t = typing.cast(Table, SettlementInstruction.__table__)


# --------------------------------------------------------------------------- views


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ids and dates as strings, amounts as integers."""

        return {
            "id": self.id,
            "business_date": self.business_date.isoformat(),
            "cutoff_at": _stamp(self.cutoff_at),
            "status": self.status,
            "currency": self.currency,
            "minor_exponent": self.minor_exponent,
            "postings": self.postings,
            "created_at": _stamp(self.created_at),
            "completed_at": _stamp(self.completed_at),
            "paid_at": _stamp(self.paid_at),
            "settle_transaction_id": (
                None if self.settle_transaction_id is None else str(self.settle_transaction_id)
            ),
            "obligations": [
                {
                    "debtor_id": str(o.debtor_id),
                    "creditor_id": str(o.creditor_id),
                    "amount_micros": o.amount_micros,
                }
                for o in self.obligations
            ],
            "positions": [
                {
                    "partner_id": str(p.partner_id),
                    "gross_owed_micros": p.gross_owed_micros,
                    "gross_owing_micros": p.gross_owing_micros,
                    "net_micros": p.net_micros,
                    "carry_in_micros": p.carry_in_micros,
                    "payout_minor": p.payout_minor,
                    "carry_out_micros": p.carry_out_micros,
                }
                for p in self.positions
            ],
            "instructions": [
                {
                    "seq": i.seq,
                    "payer_id": str(i.payer_id),
                    "payee_id": str(i.payee_id),
                    "amount_minor": i.amount_minor,
                }
                for i in self.instructions
            ],
        }


async def _view(session: AsyncSession, row: Row[Any]) -> BatchView:
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


async def _batch_row(
    session: AsyncSession, business_date: dt.date, *, for_update: bool = False
) -> Row[Any] | None:
    query = select(batch_t).where(batch_t.c.business_date == business_date)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def get_batch(session: AsyncSession, business_date: dt.date) -> BatchView:
    """The batch of a business date, with its matrix, positions and instructions."""
    row = await _batch_row(session, business_date)
    if row is None:
        raise SettlementNotFound(business_date)
    return await _view(session, row)


@dataclass(frozen=True)
class BatchSummary:
    id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    status: str
    postings: int
    completed_at: dt.datetime | None
    paid_at: dt.datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "business_date": self.business_date.isoformat(),
            "cutoff_at": _stamp(self.cutoff_at),
            "status": self.status,
            "postings": self.postings,
            "completed_at": _stamp(self.completed_at),
            "paid_at": _stamp(self.paid_at),
        }


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


# --------------------------------------------------------------------------- running days


async def _lock(session: AsyncSession, *, wait: bool) -> bool:
    """Take the settlement lock for this transaction (PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
    already serialises every writer). ``wait=False`` gives up at once if another holds it."""
    if (await session.connection()).dialect.name != "postgresql":
        return True
    if wait:
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": SETTLEMENT_LOCK_ID})
        return True
    return bool(
        await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": SETTLEMENT_LOCK_ID}
        )
    )


async def _latest_batch(session: AsyncSession) -> Row[Any] | None:
    return (
        await session.execute(select(batch_t).order_by(batch_t.c.business_date.desc()).limit(1))
    ).first()


async def _first_money_posting_at(session: AsyncSession, currency: str) -> dt.datetime | None:
    """When the first money posting was made: the earliest of each money account's first
    posting (``seq = 1``), found through the ``(account_id, seq)`` index."""
    value: dt.datetime | None = await session.scalar(
        select(func.min(posting_t.c.created_at))
        .select_from(posting_t.join(account_t, account_t.c.id == posting_t.c.account_id))
        .where(account_t.c.ledger == currency, posting_t.c.seq == 1)
    )
    return value


async def _next_date(session: AsyncSession, calendar: Calendar, currency: str) -> dt.date | None:
    """The business date to settle next: the day after the last batch, or the day of the first
    money posting; ``None`` when there has never been one."""
    latest = await _latest_batch(session)
    if latest is not None:
        return latest.business_date + dt.timedelta(days=1)  # type: ignore[no-any-return]
    first = await _first_money_posting_at(session, currency)
    return None if first is None else calendar.business_date_of(first)


async def _check_order(
    session: AsyncSession,
    business_date: dt.date,
    cutoff_at: dt.datetime,
    latest: Row[Any] | None,
    calendar: Calendar,
    currency: str,
) -> None:
    if latest is None:
        first = await _first_money_posting_at(session, currency)
        if first is not None and first < calendar.cutoff_at(business_date - dt.timedelta(days=1)):
            earliest = calendar.business_date_of(first)
            raise SettlementOutOfOrder(
                f"business date {earliest} has money postings and must settle first",
                next_business_date=earliest.isoformat(),
            )
        return
    if latest.currency != currency:
        raise InvalidInput(
            f"settled so far in {latest.currency}, now configured for {currency}",
            currency=currency,
        )
    expected = latest.business_date + dt.timedelta(days=1)
    if business_date != expected:
        raise SettlementOutOfOrder(
            f"the last settled business date is {latest.business_date}; {expected} is next",
            next_business_date=expected.isoformat(),
        )
    if cutoff_at <= latest.cutoff_at:
        raise SettlementOutOfOrder(
            f"the cutoff of {business_date} ({cutoff_at}) is not after the last batch's"
            f" ({latest.cutoff_at}); business days must move forward",
            next_business_date=expected.isoformat(),
        )


_PROBES_PER_QUERY = 1_000
"""(account, seq) pairs looked up per query while finding the ranges' ends."""


async def _created_at(session: AsyncSession, probes: dict[int, int]) -> dict[int, dt.datetime]:
    """``created_at`` of one posting per account: ``probes`` maps account id to seq."""
    p = posting_t
    found: dict[int, dt.datetime] = {}
    pairs = sorted(probes.items())
    for start in range(0, len(pairs), _PROBES_PER_QUERY):
        chunk = pairs[start : start + _PROBES_PER_QUERY]
        rows = await session.execute(
            select(p.c.account_id, p.c.created_at).where(tuple_(p.c.account_id, p.c.seq).in_(chunk))
        )
        found.update((account_id, created_at) for account_id, created_at in rows)
    if len(found) != len(probes):
        missing = sorted(set(probes) - set(found))
        raise RuntimeError(f"postings missing below their account heads: accounts {missing}")
    return found


async def _take_ranges(
    session: AsyncSession, batch_id: int, currency: str, cutoff_at: dt.datetime
) -> list[tuple[int, int, int]]:
    """Write the batch's ranges and return them, ``(account id, after seq, through seq)``.

    Per money account, the range runs from where the account's last range ended to its last
    posting created before the cutoff. Postings are stamped in sequence order (see the engine's
    design note), so that posting is found by bisecting the sequence numbers between the two,
    a handful of index lookups per account however long the day, and only up to the account's
    head as read here: everything up to it has committed (the head moves in the transaction
    that writes the postings), and a posting that commits later, even one created before the
    cutoff, falls into the next batch. No posting row is read in bulk and none is locked."""
    a, r = account_t, range_t
    last = select(func.max(r.c.through_seq)).where(r.c.account_id == a.c.id).scalar_subquery()
    heads = (
        await session.execute(
            select(a.c.id, a.c.seq, last).where(a.c.ledger == currency, a.c.seq > 0)
        )
    ).all()
    after = {account_id: before or 0 for account_id, seq, before in heads if seq > (before or 0)}
    # Bisection: every seq up to ``low`` is before the cutoff (the last range's end counts as
    # such), every seq above ``high`` is not; the head is probed first, as on a quiet night it
    # settles the account at once.
    low = dict(after)
    high = {account_id: seq for account_id, seq, _ in heads if account_id in after}
    probes = dict(high)
    while probes:
        created = await _created_at(session, probes)
        for account_id, seq in probes.items():
            if created[account_id] < cutoff_at:
                low[account_id] = seq
            else:
                high[account_id] = seq - 1
        probes = {
            account_id: (low[account_id] + high[account_id] + 1) // 2
            for account_id in after
            if low[account_id] < high[account_id]
        }
    ranges = sorted(
        (account_id, after[account_id], low[account_id])
        for account_id in after
        if low[account_id] > after[account_id]
    )
    if ranges:
        await session.execute(
            insert(r),
            [
                {
                    "batch_id": batch_id,
                    "account_id": account_id,
                    "after_seq": before or None,
                    "through_seq": through,
                }
                for account_id, before, through in ranges
            ],
        )
    return ranges


def _in_ranges(batch_id: int) -> Any:
    """``posting`` joined to the batch's ranges: the postings the batch took."""
    p, r = posting_t, range_t
    return p.join(
        r,
        and_(
            r.c.batch_id == batch_id,
            r.c.account_id == p.c.account_id,
            p.c.seq > func.coalesce(r.c.after_seq, 0),
            p.c.seq <= r.c.through_seq,
        ),
    )


async def _id_bounds(session: AsyncSession, batch_id: int) -> tuple[int, int]:
    """The lowest and highest posting id in the batch's ranges: the first and last posting of
    each range, looked up through ``(account_id, seq)``. Per account, ids grow with seq (the
    next posting is inserted only once the one before committed, and ids come from one
    sequence with no per-session cache, as the migrations make it), so every posting the
    batch took lies between the two, and the day is one range scan of the primary key."""
    p, r = posting_t, range_t

    def end(seq: Any, extreme: Any) -> Any:
        # An equality per range on (account_id, seq): one index probe each.
        return (
            select(extreme(p.c.id))
            .select_from(p.join(r, and_(r.c.account_id == p.c.account_id, p.c.seq == seq)))
            .where(r.c.batch_id == batch_id)
            .scalar_subquery()
        )

    low, high = (
        await session.execute(
            select(
                end(func.coalesce(r.c.after_seq, 0) + 1, func.min),
                end(r.c.through_seq, func.max),
            )
        )
    ).one()
    return int(low), int(high)


@dataclass
class _Day:
    """What the postings of a batch come to: who owes whom, and how many there were."""

    matrix: dict[tuple[str, str], int]
    postings: int


async def _pair_day(session: AsyncSession, batch_id: int, currency: str) -> _Day:
    """The day's (debtor, creditor) -> micros and its number of postings, in one aggregate.

    Every posting names the account it pairs with (see the engine's design note), so the day
    is summed per (account, counterparty) in one pass over the batch's ranges, with no
    sort by transaction, and the sums become the matrix here: a credit leg is owed by its
    counterparty's partner, a debit leg owes it; a leg that names its own partner pairs with
    no one. The postings of ``settle`` transactions name their own account, so they add
    nothing, and they are not counted. Postings marked as having several counterparties are
    paired by transaction with ``netting.pair_legs`` (:func:`_pair_by_transaction`)."""
    p = posting_t
    low, high = await _id_bounds(session, batch_id)
    partner_of = {
        account_id: str(partner_id)
        for account_id, partner_id in await session.execute(
            select(account_t.c.id, account_t.c.partner_id).where(account_t.c.ledger == currency)
        )
    }
    counterparty = p.c.counterparty_account_id
    # Per (account, counterparty): what the account was credited, and everything it moved.
    # On PostgreSQL the ``posting_pairs`` statistics (migration 0007) tell the planner how few
    # such groups there are, so that each worker sums its share of the day before they meet.
    sums = await session.execute(
        select(
            p.c.account_id,
            counterparty,
            func.sum(p.c.amount).filter(p.c.amount > 0),
            func.sum(p.c.amount),
            func.count(),
        )
        .select_from(_in_ranges(batch_id))
        .where(p.c.id.between(low, high))
        .group_by(p.c.account_id, counterparty)
    )
    matrix: dict[tuple[str, str], int] = defaultdict(int)
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
        postings -= int(
            await session.scalar(
                select(func.count())
                .select_from(_in_ranges(batch_id))
                .where(
                    one_of(session, p.c.transaction_id, settle_transactions),
                    counterparty.is_not(None),
                )
            )
            or 0
        )
    if by_transaction:
        postings += await _pair_by_transaction(
            session,
            batch_id,
            (low, high),
            partner_of,
            settle_transactions,
            matrix,
        )
    return _Day(dict(matrix), postings)


async def _pair_by_transaction(
    session: AsyncSession,
    batch_id: int,
    bounds: tuple[int, int],
    partner_of: dict[int, str],
    settle_transactions: list[uuid.UUID],
    matrix: dict[tuple[str, str], int],
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
        .select_from(_in_ranges(batch_id))
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
    matrix: dict[tuple[str, str], int],
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


def _add_pairs(matrix: dict[tuple[str, str], int], nets: dict[str, int]) -> None:
    """One transaction's partner nets, paired by ``pair_legs``, into the day's matrix."""
    for o in pair_legs(nets):
        matrix[o.debtor, o.creditor] += o.amount_micros


async def _donation_stats(
    session: AsyncSession, batch_id: int, currency: str
) -> dict[tuple[uuid.UUID, uuid.UUID], DonationStats]:
    """Per (charity, brand): the day's donations and reversals, counted and in points. Reads
    only the charities' postings in the batch's ranges, through ``(account_id, seq)``."""
    charity_accounts = (
        (
            await session.execute(
                select(account_t.c.id)
                .join(partner_t, partner_t.c.id == account_t.c.partner_id)
                .where(partner_t.c.kind == "charity", account_t.c.ledger == currency)
            )
        )
        .scalars()
        .all()
    )
    if not charity_accounts:
        return {}
    p = posting_t
    conditions = [one_of(session, range_t.c.account_id, charity_accounts)]
    touched = (
        select(account_t.c.partner_id.label("charity"), p.c.transaction_id.label("tx"))
        .select_from(_in_ranges(batch_id).join(account_t, account_t.c.id == p.c.account_id))
        .where(*conditions)
        .distinct()
        .subquery()
    )
    t = transaction_t
    transaction: Any
    if session.get_bind().dialect.name == "postgresql":
        # Each transaction by its primary key (LATERAL, the LIMIT keeping it from being
        # flattened into a join): a day without donations must not make the planner expect
        # none and scan every transaction of the day for them.
        transaction = (
            select(t.c.partner_id, t.c.kind, t.c.points)
            .where(t.c.id == touched.c.tx)
            .limit(1)
            .lateral("transaction")
        )
        joined = touched.join(transaction, true())
    else:
        transaction = t
        joined = touched.join(t, t.c.id == touched.c.tx)
    tc = transaction.c
    rows = await session.execute(
        select(
            touched.c.charity,
            tc.partner_id,
            tc.kind,
            func.count(),
            cast(func.sum(tc.points), BigInteger),
        )
        .select_from(joined)
        .where(tc.kind.in_(["donate", "reverse"]))
        .group_by(touched.c.charity, tc.partner_id, tc.kind)
    )
    counts: dict[tuple[uuid.UUID, uuid.UUID], dict[str, int]] = defaultdict(dict)
    for charity, brand, kind, count, points in rows:
        line = counts[charity, brand]
        if kind == "donate":
            line["donations"], line["donated_points"] = int(count), int(points or 0)
        else:
            line["reversals"], line["reversed_points"] = int(count), int(points or 0)
    return {key: DonationStats(**value) for key, value in counts.items()}


async def _settle_locked(
    session: AsyncSession,
    business_date: dt.date,
    *,
    calendar: Calendar,
    settings: Settings,
    keys: ExchangeKeys,
    on_step: OnStep | None,
) -> BatchView:
    """Settle one day inside the caller's transaction, which holds the settlement lock."""
    existing = await _batch_row(session, business_date)
    if existing is not None:
        return await _view(session, existing)
    currency = settings.settlement_currency
    cutoff_at = calendar.cutoff_at(business_date)
    latest = await _latest_batch(session)
    await _check_order(session, business_date, cutoff_at, latest, calendar, currency)

    def step(name: str) -> None:
        if on_step is not None:
            on_step(business_date, name)

    if (await session.connection()).dialect.name == "postgresql":
        # For this transaction only: memory for its sorts and hashes (they spill to disk
        # beyond it), and no JIT, whose compiling costs more than it saves on these plans.
        await session.execute(
            text("SELECT set_config('work_mem', :value, true), set_config('jit', 'off', true)"),
            {"value": settings.settlement_work_mem},
        )
    now = utcnow()
    batch_id = await session.scalar(
        insert(batch_t)
        .values(
            business_date=business_date,
            cutoff_at=cutoff_at,
            status="open",
            currency=currency,
            minor_exponent=settings.settlement_minor_exponent,
            postings=0,
            created_at=now,
        )
        .returning(batch_t.c.id)
    )
    assert batch_id is not None
    ranges = await _take_ranges(session, batch_id, currency, cutoff_at)
    if (await session.connection()).dialect.name == "postgresql":
        # The planner knows nothing yet of the ranges just written (autovacuum's statistics
        # come after the commit); without them it may walk the day posting by posting.
        await session.execute(text("ANALYZE settlement_range"))
    step("ranges")

    day = await _pair_day(session, batch_id, currency) if ranges else _Day({}, 0)
    matrix, postings = day.matrix, day.postings
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
    step("obligations")

    carry_in: dict[str, int] = {}
    if latest is not None:
        carried = await session.execute(
            select(position_t.c.partner_id, position_t.c.carry_out_micros).where(
                position_t.c.batch_id == latest.id, position_t.c.carry_out_micros != 0
            )
        )
        carry_in = {str(partner): amount for partner, amount in carried}
    gross = gross_matrix(obligations)
    owed: dict[str, int] = defaultdict(int)
    owing: dict[str, int] = defaultdict(int)
    for (debtor, creditor), amount in gross.items():
        owing[debtor] += amount
        owed[creditor] += amount
    positions = settle_positions(
        net_positions(obligations), carry_in, settings.settlement_minor_exponent
    )
    instructions = payment_instructions(positions)
    if positions:
        await session.execute(
            insert(position_t),
            [
                {
                    "batch_id": batch_id,
                    "partner_id": uuid.UUID(p.participant),
                    "gross_owed_micros": owed[p.participant],
                    "gross_owing_micros": owing[p.participant],
                    "net_micros": p.net_micros,
                    "carry_in_micros": p.carry_in_micros,
                    "payout_minor": p.payout_minor,
                    "carry_out_micros": p.carry_out_micros,
                }
                for p in positions
            ],
        )
    if instructions:
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
                for seq, i in enumerate(instructions, start=1)
            ],
        )
    step("positions")

    participant_ids = [uuid.UUID(p.participant) for p in positions]
    participants = {
        row.id: Participant(row.id, row.kind, row.name, row.currency)
        for row in await session.execute(
            select(partner_t.c.id, partner_t.c.kind, partner_t.c.name, partner_t.c.currency).where(
                partner_t.c.id.in_(participant_ids)
            )
        )
    }
    facts = DayFacts(
        batch_id=batch_id,
        business_date=business_date,
        cutoff_at=cutoff_at,
        currency=currency,
        minor_exponent=settings.settlement_minor_exponent,
        participants=participants,
        matrix={(uuid.UUID(d), uuid.UUID(c)): amount for (d, c), amount in gross.items()},
        positions={
            uuid.UUID(p.participant): {
                "gross_owed_micros": owed[p.participant],
                "gross_owing_micros": owing[p.participant],
                "net_micros": p.net_micros,
                "carry_in_micros": p.carry_in_micros,
                "payout_minor": p.payout_minor,
                "carry_out_micros": p.carry_out_micros,
            }
            for p in positions
        },
        instructions=[
            (seq, uuid.UUID(i.payer), uuid.UUID(i.payee), i.amount_minor)
            for seq, i in enumerate(instructions, start=1)
        ],
        donations=await _donation_stats(session, batch_id, currency),
    )
    hashes = await issue_statements(session, facts, keys)
    for p in positions:
        partner_id = uuid.UUID(p.participant)
        await enqueue_event(
            session,
            partner_id,
            "settlement.ready",
            {
                "batch_id": batch_id,
                "business_date": business_date.isoformat(),
                "currency": currency,
                "net_micros": p.net_micros,
                "payout_minor": p.payout_minor,
                "carry_out_micros": p.carry_out_micros,
                "statement_sha256": hashes[partner_id],
            },
            now=now,
        )
    await session.execute(
        update(batch_t)
        .where(batch_t.c.id == batch_id)
        .values(status="complete", postings=postings, completed_at=utcnow())
    )
    step("statements")
    row = await _batch_row(session, business_date)
    assert row is not None
    return await _view(session, row)


async def settle_day(
    session_factory: async_sessionmaker[AsyncSession],
    business_date: dt.date,
    *,
    settings: Settings,
    keys: ExchangeKeys,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
    on_step: OnStep | None = None,
) -> BatchView:
    """Settle one business day, in one database transaction, and return its batch; a day
    already settled returns the batch it has. Refuses a day whose cutoff has not passed
    (:class:`SettlementNotDue`) and a day out of order (:class:`SettlementOutOfOrder`)."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    now = now or utcnow()
    if calendar.cutoff_at(business_date) > now:
        raise SettlementNotDue(
            f"business date {business_date} ends at {calendar.cutoff_at(business_date)}",
            business_date=business_date.isoformat(),
        )
    async with session_factory() as session, session.begin():
        await _lock(session, wait=True)
        return await _settle_locked(
            session,
            business_date,
            calendar=calendar,
            settings=settings,
            keys=keys,
            on_step=on_step,
        )


async def due_dates(
    session: AsyncSession,
    *,
    settings: Settings,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
) -> list[dt.date]:
    """The business dates :func:`settle_due` would settle now, in order."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    last = _last_due(calendar, settings, now or utcnow())
    first = await _next_date(session, calendar, settings.settlement_currency)
    if first is None or first > last:
        return []
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _last_due(calendar: Calendar, settings: Settings, now: dt.datetime) -> dt.date:
    return last_complete_day(
        calendar, now - dt.timedelta(seconds=settings.settlement_grace_seconds)
    )


async def settle_due(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    settings: Settings,
    keys: ExchangeKeys,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
    wait: bool = False,
    on_step: OnStep | None = None,
) -> list[BatchView]:
    """Settle every business day that has ended (``settlement_grace_seconds`` ago) and is not
    settled yet, oldest first, each in its own transaction, so that a failure keeps the days
    before it. With ``wait=False`` (the scheduler) a run that finds another replica settling
    gives up at once and leaves the work to it; ``wait=True`` (the CLI) queues behind it."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    last = _last_due(calendar, settings, now or utcnow())
    settled: list[BatchView] = []
    while True:
        async with session_factory() as session, session.begin():
            if not await _lock(session, wait=wait):
                break
            business_date = await _next_date(session, calendar, settings.settlement_currency)
            if business_date is None or business_date > last:
                break
            settled.append(
                await _settle_locked(
                    session,
                    business_date,
                    calendar=calendar,
                    settings=settings,
                    keys=keys,
                    on_step=on_step,
                )
            )
    return settled


# --------------------------------------------------------------------------- paying


async def mark_paid(session: AsyncSession, business_date: dt.date) -> BatchView:
    """Record that a batch's payments were made: book its payouts in one ``settle`` transaction
    and mark it ``paid``, after which it never changes. Paying twice is refused."""
    row = await _batch_row(session, business_date, for_update=True)
    if row is None:
        raise SettlementNotFound(business_date)
    if row.status == "paid":
        raise SettlementAlreadyPaid(
            f"business date {business_date} was marked paid at {_stamp(row.paid_at)}",
            business_date=business_date.isoformat(),
        )
    unit = minor_unit_micros(row.minor_exponent)
    payouts = (
        await session.execute(
            select(position_t.c.partner_id, position_t.c.payout_minor, account_t.c.id)
            .join(
                account_t,
                and_(
                    account_t.c.partner_id == position_t.c.partner_id,
                    account_t.c.kind == "settlement",
                    account_t.c.ledger == row.currency,
                    account_t.c.shard == 0,
                    account_t.c.member_id.is_(None),
                ),
            )
            .where(position_t.c.batch_id == row.id, position_t.c.payout_minor != 0)
            .order_by(account_t.c.id)
        )
    ).all()
    settle_transaction_id = None
    if payouts:
        operator = await session.scalar(
            select(partner_t.c.id).where(partner_t.c.kind == "operator")
        )
        if operator is None:
            raise InvalidInput("the exchange has no operator partner to book the payments to")
        posted = await post_transaction(
            session,
            TransactionSpec(
                kind="settle",
                partner_id=operator,
                legs=[Leg(account_id, -payout * unit) for _, payout, account_id in payouts],
                reference=f"settlement {business_date.isoformat()}",
                paired=False,
                details={"batch_id": row.id, "business_date": business_date.isoformat()},
            ),
        )
        settle_transaction_id = posted.id
    await session.execute(
        update(batch_t)
        .where(batch_t.c.id == row.id)
        .values(status="paid", paid_at=utcnow(), settle_transaction_id=settle_transaction_id)
    )
    paid = await _batch_row(session, business_date)
    assert paid is not None
    return await _view(session, paid)
