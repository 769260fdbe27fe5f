"""Nightly settlement: a business day's money postings become one batch, netted and signed.

Design note
-----------
* What a day takes. The batch for business date ``D`` (see ``settlement.calendar``) takes every
  money posting (ledger = the settlement currency) that no batch has taken yet and that was
  created before ``cutoff(D)``, except the postings of ``settle`` transactions (the payouts
  booked by :func:`mark_paid`, which is their only writer and records each on its batch). A
  posting that commits after the batch was taken, though created before the cutoff, goes to
  the next batch. ``settlement_entry.posting_id`` is a primary key, so no posting is ever in
  two batches; and since a transaction's postings share ``created_at`` and commit together,
  a transaction is never split between two batches.
* Work follows the day, not the history. Per money account, a cursor (``settlement_cursor``)
  records a sequence number up to which every posting is settled. An account's postings
  commit in sequence order (the engine numbers them under the account's row lock), so the
  cursor is taken first, in one statement: up to the account's first posting created at or
  after the cutoff, or its head when there is none. Everything up to it is then committed and
  created before the cutoff, so the entries statement that follows takes it. The next batch
  reads only what lies past the cursors (one range scan of ``posting``'s primary key, see
  :func:`_beyond_cursors`), and looks a posting up among the entries only if it was created
  before the previous cutoff (it committed late): no later posting can be in an earlier batch.
  Settlement never locks a ledger row (no foreign key from its tables to ``account`` or
  ``posting``), so writers never wait for it, nor it for them.
* Who owes whom. In SQL, in one pass sorted by transaction: a transaction whose debit side
  (or credit side) is one partner pairs that partner with each leg on the other side, and the
  matrix comes back summed per (debtor, creditor) (:func:`_gross_matrix`). Transactions with
  several partners on both sides (the services make none) are paired by
  ``netting.pair_legs``, streamed one transaction at a time. Nothing loops over postings in
  Python and no result grows with the day: the matrix has at most ``n * (n - 1)`` rows.
* Exactly once. A day is written by one database transaction (batch, entries, cursors, matrix,
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
    FromClause,
    Row,
    Subquery,
    Table,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
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
from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from partners.models import Partner
from settlement.calendar import BusinessCalendar, Calendar, last_complete_day
from settlement.models import (
    SettlementBatch,
    SettlementCursor,
    SettlementEntry,
    SettlementInstruction,
    SettlementObligation,
    SettlementPosition,
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
from settlement.webhooks import enqueue_event

SETTLEMENT_LOCK_ID = 7_420_004
"""The PostgreSQL advisory lock every settlement run holds (any fixed number)."""

STEPS = ("entries", "obligations", "positions", "statements")
"""What :func:`settle_day` reports to ``on_step`` as it finishes each part of a day."""

OnStep = Callable[[dt.date, str], None]

account_t = typing.cast(Table, Account.__table__)
posting_t = typing.cast(Table, Posting.__table__)
transaction_t = typing.cast(Table, LedgerTransaction.__table__)
partner_t = typing.cast(Table, Partner.__table__)
batch_t = typing.cast(Table, SettlementBatch.__table__)
entry_t = typing.cast(Table, SettlementEntry.__table__)
cursor_t = typing.cast(Table, SettlementCursor.__table__)
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


def _with_cursors(previous: Row[Any] | None) -> tuple[FromClause, Any]:
    """``account`` joined to the previous batch's cursors, and each account's cursor (0 for an
    account that has none: the first batch, or an account opened since)."""
    if previous is None:
        return account_t, literal(0, BigInteger)
    prev = cursor_t.alias("prev")
    joined = account_t.outerjoin(
        prev, and_(prev.c.account_id == account_t.c.id, prev.c.batch_id == previous.id)
    )
    return joined, func.coalesce(prev.c.through_seq, 0)


def _beyond_cursors(
    previous: Row[Any] | None,
    currency: str,
    busy: list[int],
    lowest_id: int | None,
    *,
    lateral: bool,
) -> Subquery:
    """Every money posting past its account's cursor (``seq`` above the previous batch's
    ``through_seq``), as visible to the statement that uses this.

    Per account, a posting's id grows with its seq (the next one is inserted only after the one
    before committed, and ids come from one sequence with no per-session cache, as the
    migrations make it), so the postings past a ``busy`` account's cursor have ids from its next
    posting's on: the lowest of those ids bounds one range scan of ``posting``'s primary key
    over the day, rather than a scan per account over interleaved rows. Every other account
    (quiet when ``busy`` was found, or opened since) is read through ``(account_id, seq)``,
    per account (``LATERAL`` on PostgreSQL, so that the planner cannot pick a scan of the
    whole table for them)."""
    a, p = account_t, posting_t
    accounts, prev_seq = _with_cursors(previous)
    columns = (p.c.id, p.c.transaction_id, p.c.account_id, p.c.amount, p.c.seq, p.c.created_at)
    past = and_(p.c.account_id == a.c.id, p.c.seq > prev_seq)
    if lateral:
        # The ORDER BY (which the index gives for free) keeps PostgreSQL from flattening the
        # LATERAL subquery into a plain join.
        following = select(*columns).where(past).order_by(p.c.seq).lateral("following")
        others = (
            select(*following.c)
            .select_from(accounts.join(following, true()))
            .where(a.c.ledger == currency, a.c.id.not_in(busy))
        )
    else:
        others = (
            select(*columns)
            .select_from(accounts.join(p, past))
            .where(a.c.ledger == currency, a.c.id.not_in(busy))
        )
    if not busy:
        return others.subquery("beyond")
    in_range = (
        select(*columns)
        .select_from(accounts.join(p, past))
        .where(a.c.ledger == currency, a.c.id.in_(busy), p.c.id >= lowest_id)
    )
    return union_all(in_range, others).subquery("beyond")


async def _take_entries(
    session: AsyncSession,
    batch_id: int,
    previous: Row[Any] | None,
    currency: str,
    cutoff_at: dt.datetime,
) -> int:
    """Write the batch's cursors, then its entries (see the design note for why, in that order,
    they take every posting exactly once). Returns how many postings the batch took."""
    a, p, e = account_t, posting_t, entry_t
    accounts, prev_seq = _with_cursors(previous)
    following = await session.execute(
        select(a.c.id, p.c.id)
        .select_from(accounts.join(p, and_(p.c.account_id == a.c.id, p.c.seq == prev_seq + 1)))
        .where(a.c.ledger == currency)
    )
    next_ids: dict[int, int] = {account_id: posting_id for account_id, posting_id in following}
    busy, lowest = sorted(next_ids), min(next_ids.values(), default=None)
    lateral = (await session.connection()).dialect.name == "postgresql"

    beyond = _beyond_cursors(previous, currency, busy, lowest, lateral=lateral)
    first_late = (
        select(
            beyond.c.account_id,
            func.min(case((beyond.c.created_at >= cutoff_at, beyond.c.seq))).label("seq"),
        )
        .group_by(beyond.c.account_id)
        .subquery("first_late")
    )
    await session.execute(
        insert(cursor_t).from_select(
            ["batch_id", "account_id", "through_seq"],
            select(
                literal(batch_id, BigInteger),
                a.c.id,
                func.coalesce(first_late.c.seq - 1, a.c.seq),
            )
            .select_from(a.outerjoin(first_late, first_late.c.account_id == a.c.id))
            .where(a.c.ledger == currency),
        )
    )

    beyond = _beyond_cursors(previous, currency, busy, lowest, lateral=lateral)
    settle_transactions = select(batch_t.c.settle_transaction_id).where(
        batch_t.c.settle_transaction_id.is_not(None)
    )
    conditions = [
        beyond.c.created_at < cutoff_at,
        beyond.c.transaction_id.not_in(settle_transactions),
    ]
    if previous is not None:
        # Only a posting created before the previous cutoff can be in an earlier batch; those
        # few are looked up one by one (a scalar subquery, which the planner cannot turn into
        # a join that would hash every entry ever made).
        taken = select(func.count()).where(e.c.posting_id == beyond.c.id).scalar_subquery()
        conditions.append(or_(beyond.c.created_at >= previous.cutoff_at, taken == 0))
    result = await session.execute(
        insert(e).from_select(
            ["batch_id", "posting_id", "transaction_id", "account_id", "amount"],
            select(
                literal(batch_id, BigInteger),
                beyond.c.id,
                beyond.c.transaction_id,
                beyond.c.account_id,
                beyond.c.amount,
            ).where(*conditions),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _gross_matrix(
    session: AsyncSession, batch_id: int, currency: str
) -> dict[tuple[str, str], int]:
    """The day's (debtor, creditor) -> micros, summed in SQL (see the design note).

    Partners are numbered (``DENSE_RANK``) so that each entry's transaction can tell, with
    ``MIN`` and ``MAX`` over the transaction, whether one partner alone is on its debit side
    (then every credit leg is owed by that partner) or on its credit side (then every debit leg
    owes that partner). One sort by transaction, one pass, the matrix summed in a small hash; a
    partner's own legs on both sides of a transaction pair with itself and are dropped."""
    e, a = entry_t, account_t
    numbered = (
        select(
            a.c.id,
            a.c.partner_id,
            func.dense_rank().over(order_by=a.c.partner_id).label("number"),
        )
        .where(a.c.ledger == currency)
        .subquery("numbered")
    )
    n = numbered.c

    def over_transaction(function: Any) -> Any:
        return function.over(partition_by=e.c.transaction_id)

    debit = case((e.c.amount < 0, n.number))
    credit = case((e.c.amount > 0, n.number))
    legs = (
        select(
            e.c.transaction_id.label("tx"),
            n.number,
            e.c.amount,
            over_transaction(func.min(debit)).label("debtor_low"),
            over_transaction(func.max(debit)).label("debtor_high"),
            over_transaction(func.min(credit)).label("creditor_low"),
            over_transaction(func.max(credit)).label("creditor_high"),
        )
        .select_from(e.join(numbered, n.id == e.c.account_id))
        .where(e.c.batch_id == batch_id)
        .subquery("legs")
    )
    leg = legs.c
    one_debtor = leg.debtor_low == leg.debtor_high
    one_creditor = and_(leg.debtor_low != leg.debtor_high, leg.creditor_low == leg.creditor_high)
    debtor = case((one_debtor, leg.debtor_low), (one_creditor, leg.number))
    creditor = case((one_debtor, leg.number), (one_creditor, leg.creditor_high))
    pairs = (
        select(
            debtor.label("debtor"),
            creditor.label("creditor"),
            cast(func.sum(func.abs(leg.amount)), BigInteger).label("amount"),
        )
        .where(
            or_(
                and_(one_debtor, leg.amount > 0),
                and_(one_creditor, leg.amount < 0),
                # Several partners on both sides: one row (debtor and creditor NULL) says so.
                and_(leg.debtor_low != leg.debtor_high, leg.creditor_low != leg.creditor_high),
            )
        )
        .group_by(debtor, creditor)
    )
    partner_of = {
        number: str(partner)
        for partner, number in await session.execute(select(n.partner_id, n.number).distinct())
    }
    matrix: dict[tuple[str, str], int] = defaultdict(int)
    several = False
    for row in await session.execute(pairs):
        if row.debtor is None:
            several = True
        elif row.debtor != row.creditor:
            matrix[partner_of[row.debtor], partner_of[row.creditor]] += int(row.amount)
    if not several:
        return dict(matrix)

    # None of the exchange's own kinds of transaction, but the ledger allows them; streamed,
    # one transaction in memory at a time.
    rows = await session.stream(
        select(leg.tx, leg.number, leg.amount)
        .where(leg.debtor_low != leg.debtor_high, leg.creditor_low != leg.creditor_high)
        .order_by(leg.tx)
    )
    current: uuid.UUID | None = None
    amounts: dict[str, int] = defaultdict(int)

    def pair() -> None:
        for o in pair_legs({p: amount for p, amount in amounts.items() if amount}):
            matrix[o.debtor, o.creditor] += o.amount_micros

    async for row in rows:
        if row.tx != current and amounts:
            pair()
            amounts.clear()
        current = row.tx
        amounts[partner_of[row.number]] += int(row.amount)
    if amounts:
        pair()
    return dict(matrix)


async def _donation_stats(
    session: AsyncSession, batch_id: int, currency: str
) -> dict[tuple[uuid.UUID, uuid.UUID], DonationStats]:
    """Per (charity, brand): the day's donations and reversals, counted and in points. Reads
    only the charities' entries, through ``(batch_id, account_id)``."""
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
    touched = (
        select(account_t.c.partner_id.label("charity"), entry_t.c.transaction_id.label("tx"))
        .select_from(entry_t.join(account_t, account_t.c.id == entry_t.c.account_id))
        .where(entry_t.c.batch_id == batch_id, entry_t.c.account_id.in_(charity_accounts))
        .distinct()
        .subquery()
    )
    rows = await session.execute(
        select(
            touched.c.charity,
            transaction_t.c.partner_id,
            transaction_t.c.kind,
            func.count(),
            cast(func.sum(transaction_t.c.points), BigInteger),
        )
        .join(transaction_t, transaction_t.c.id == touched.c.tx)
        .where(transaction_t.c.kind.in_(["donate", "reverse"]))
        .group_by(touched.c.charity, transaction_t.c.partner_id, transaction_t.c.kind)
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
    postings = await _take_entries(session, batch_id, latest, currency, cutoff_at)
    if (await session.connection()).dialect.name == "postgresql":
        # The planner knows nothing yet of the rows just written (autovacuum's statistics come
        # after the commit); a sample of them turns its plans from nested sorts into hashes.
        await session.execute(text("ANALYZE settlement_entry"))
    step("entries")

    matrix = await _gross_matrix(session, batch_id, currency)
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
