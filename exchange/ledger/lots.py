"""Lots: the age of a member's points, kept by the engine under its locks.

Design note
-----------
* What opens a lot. Every posting that credits a member account (issue, earn, a transfer or a
  conversion coming in, a reversal that gives points back) opens one lot of its amount, whose
  expiry follows from the brand's expiry policy in force at the transaction's time
  (``exchange.ledger.policies``).
* What consumes lots. Every posting that debits a member account (redeem, capture, a transfer
  or a conversion going out, a donation, an expiry, a reversal that takes points back) consumes
  the account's open lots oldest expiry first (ties: the older lot, by its time-ordered id), and
  ``lot_consumption`` records how many points it took from which lot.
* Invariant. The open lots (``remaining > 0``) of a member account sum to its balance, always;
  no lot is negative (a CHECK constraint); ``ledger verify`` checks both, and that each lot's
  consumptions add up to what it lost.
* Holds reserve nothing in lots: a hold changes no balance, so it changes no lot. Its capture is
  a debit and consumes the oldest lots then. An expiry may therefore take only the member's
  available points (balance less held): it never makes ``balance - held`` negative, and what a
  live hold keeps of due lots stays open until a later run finds it free.
* Activity. Under an ``activity`` policy every earn (``issue`` or ``earn``) extends every open
  lot of the member to at least the earn's own expiry: one UPDATE for the whole group, whose
  cost is the member's open lots (the one operation that touches them all, by definition).
* Cost. A debit reads its account's first few open lots in consumption order from a partial
  index on ``(account_id, expires_at, id) WHERE remaining > 0``, and more, a page at a time,
  only while what it read does not cover what the group takes from that account: the work is
  proportional to the lots it touches, not to the lots the member has. The engine calls
  :func:`record_lots` once per group, after it has decided every spec, with what posted; it
  reads the policies once and the lots once (a page per account in one statement), and writes
  new lots, consumed lots, consumptions and activity extensions in one statement each.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import uuid7
from exchange.dialect import insert_columns, is_postgresql, update_by_id
from exchange.ledger.lot_models import Lot, LotConsumption
from exchange.ledger.policies import NEVER, PolicyTerms, lot_expiry, policies_in_force

if TYPE_CHECKING:  # the engine hands these over; it imports this module
    from exchange.ledger.bulk import Posted

EARN_KINDS = frozenset({"issue", "earn"})
"""Transaction kinds that count as activity for an ``activity`` policy."""
_FIRST_PAGE = 8

lot_t = cast(Table, Lot.__table__)
consumption_t = cast(Table, LotConsumption.__table__)


class LotsShort(RuntimeError):
    """A member account's open lots do not cover a debit: the invariant was broken outside the
    engine. The group's transaction fails rather than post it."""


@dataclass(slots=True)
class _Lot:
    expires_at: dt.datetime
    id: uuid.UUID
    remaining: int
    loaded: int | None
    """``remaining`` as read from the database; ``None`` for a lot opened in this group."""
    transaction_id: uuid.UUID | None = None
    points: int = 0

    @property
    def key(self) -> tuple[dt.datetime, uuid.UUID]:
        return self.expires_at, self.id


@dataclass
class _Book:
    """One account's open lots in consumption order, as far as they were read."""

    lots: list[_Lot] = field(default_factory=list)

    def add(self, lot: _Lot) -> None:
        bisect.insort(self.lots, lot, key=lambda each: each.key)

    def extend_to(self, expires_at: dt.datetime) -> None:
        for lot in self.lots:
            if lot.expires_at < expires_at:
                lot.expires_at = expires_at
        self.lots.sort(key=lambda each: each.key)


_PAGE_POSTGRES = text(
    """
    SELECT w.account_id, l.id, l.remaining, l.expires_at
    FROM unnest(
        CAST(:accounts AS bigint[]), CAST(:after_expiry AS timestamptz[]),
        CAST(:after_id AS uuid[]), CAST(:sizes AS int[])
    ) AS w(account_id, after_expiry, after_id, size)
    CROSS JOIN LATERAL (
        SELECT lot.id, lot.remaining, lot.expires_at FROM lot
        WHERE lot.account_id = w.account_id AND lot.remaining > 0
            AND (lot.expires_at, lot.id) > (w.after_expiry, w.after_id)
        ORDER BY lot.expires_at, lot.id
        LIMIT w.size
    ) AS l
    """
)
_START = (dt.datetime(1, 1, 1, tzinfo=dt.UTC), uuid.UUID(int=0))


async def _read_pages(
    session: AsyncSession, wanted: Mapping[int, tuple[tuple[dt.datetime, uuid.UUID], int]]
) -> dict[int, list[_Lot]]:
    """For each account, up to ``size`` open lots after ``(expires_at, id)``, in order."""
    found: dict[int, list[_Lot]] = defaultdict(list)
    if is_postgresql(session):
        rows = await session.execute(
            _PAGE_POSTGRES,
            {
                "accounts": list(wanted),
                "after_expiry": [after[0] for after, _ in wanted.values()],
                "after_id": [after[1] for after, _ in wanted.values()],
                "sizes": [size for _, size in wanted.values()],
            },
        )
        for account_id, lot_id, remaining, expires_at in rows:
            found[account_id].append(_Lot(expires_at, lot_id, remaining, remaining))
    else:
        for account_id, ((after_expiry, after_id), size) in wanted.items():
            query = (
                select(lot_t.c.id, lot_t.c.remaining, lot_t.c.expires_at)
                .where(lot_t.c.account_id == account_id, lot_t.c.remaining > 0)
                .where(
                    (lot_t.c.expires_at > after_expiry)
                    | ((lot_t.c.expires_at == after_expiry) & (lot_t.c.id > after_id))
                )
                .order_by(lot_t.c.expires_at, lot_t.c.id)
                .limit(size)
            )
            for lot_id, remaining, expires_at in await session.execute(query):
                found[account_id].append(_Lot(expires_at, lot_id, remaining, remaining))
    for lots in found.values():
        lots.sort(key=lambda each: each.key)
    return found


async def _read_books(session: AsyncSession, needs: Mapping[int, int]) -> dict[int, _Book]:
    """For each account, its open lots in consumption order until they cover ``needs[account]``
    points (or there are no more): a page each, then bigger pages only for those still short."""
    books = {account_id: _Book() for account_id in needs}
    covered: dict[int, int] = dict.fromkeys(needs, 0)
    wanted = {account_id: (_START, _FIRST_PAGE) for account_id in needs}
    while wanted:
        pages = await _read_pages(session, wanted)
        following: dict[int, tuple[tuple[dt.datetime, uuid.UUID], int]] = {}
        for account_id, (_, size) in wanted.items():
            page = pages.get(account_id, [])
            books[account_id].lots.extend(page)
            covered[account_id] += sum(lot.remaining for lot in page)
            if covered[account_id] < needs[account_id] and len(page) == size:
                following[account_id] = (page[-1].key, size * 4)
        wanted = following
    return books


@dataclass
class _Changes:
    """What a group writes: new lots, consumed lots, consumptions, activity extensions."""

    opened: list[tuple[int, _Lot]] = field(default_factory=list)
    consumed: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, int]] = field(default_factory=dict)
    """(transaction id, lot id) -> (account id, points)."""
    extended: dict[int, dt.datetime] = field(default_factory=dict)


def _consume(
    book: _Book, account_id: int, points: int, transaction_id: uuid.UUID, changes: _Changes
) -> None:
    need = points
    lots = book.lots
    while need:
        if not lots:
            raise LotsShort(f"the open lots of account {account_id} do not cover its balance")
        lot = lots[0]
        take = min(need, lot.remaining)
        lot.remaining -= take
        need -= take
        key = (transaction_id, lot.id)
        _, before = changes.consumed.get(key, (account_id, 0))
        changes.consumed[key] = (account_id, before + take)
        if not lot.remaining:
            lots.pop(0)


def _walk(
    posted: Posted,
    partner_of: Mapping[int, uuid.UUID],
    policies: Mapping[uuid.UUID, PolicyTerms],
    books: dict[int, _Book],
    now: dt.datetime,
) -> _Changes:
    """Open and consume lots for every member posting, spec by spec, in order."""
    changes = _Changes()
    for spec, outcome in posted:
        for line in outcome.postings:
            if line.account_kind != "member":
                continue
            account_id = line.account_id
            book = books.setdefault(account_id, _Book())
            if line.amount < 0:
                _consume(book, account_id, -line.amount, outcome.id, changes)
                continue
            policy = policies.get(partner_of[account_id])
            expires_at = lot_expiry(policy, now)
            if policy is not None and policy.extends_on_earn and spec.kind in EARN_KINDS:
                book.extend_to(expires_at)
                changes.extended[account_id] = max(
                    expires_at, changes.extended.get(account_id, expires_at)
                )
            lot = _Lot(expires_at, uuid7(), line.amount, None, outcome.id, line.amount)
            book.add(lot)
            changes.opened.append((account_id, lot))
    return changes


async def record_lots(
    session: AsyncSession, posted: Posted, partner_of: Mapping[int, uuid.UUID], now: dt.datetime
) -> None:
    """Open and consume the lots of every member posting of ``posted`` (the specs that posted,
    in order), inside the engine's transaction and under its locks."""
    credited: set[uuid.UUID] = set()
    needs: dict[int, int] = defaultdict(int)
    for _, outcome in posted:
        for line in outcome.postings:
            if line.account_kind != "member":
                continue
            if line.amount > 0:
                credited.add(partner_of[line.account_id])
            else:
                needs[line.account_id] -= line.amount
    if not credited and not needs:
        return
    policies = await policies_in_force(session, credited, now)
    books = await _read_books(session, needs) if needs else {}
    loaded = [lot for book in books.values() for lot in book.lots]
    changes = _walk(posted, partner_of, policies, books, now)
    await _write(session, changes, loaded, now)


async def _write(
    session: AsyncSession, changes: _Changes, loaded: Sequence[_Lot], now: dt.datetime
) -> None:
    if changes.opened:
        await insert_columns(
            session,
            lot_t,
            {
                "id": [lot.id for _, lot in changes.opened],
                "account_id": [account_id for account_id, _ in changes.opened],
                "transaction_id": [lot.transaction_id for _, lot in changes.opened],
                "points": [lot.points for _, lot in changes.opened],
                "remaining": [lot.remaining for _, lot in changes.opened],
                "expires_at": [lot.expires_at for _, lot in changes.opened],
            },
            {"noticed": False, "created_at": now},
        )
    touched = [lot for lot in loaded if lot.remaining != lot.loaded]
    if touched:
        await update_by_id(
            session,
            lot_t,
            {"id": [lot.id for lot in touched], "remaining": [lot.remaining for lot in touched]},
        )
    if changes.consumed:
        items = list(changes.consumed.items())
        await insert_columns(
            session,
            consumption_t,
            {
                "transaction_id": [transaction_id for (transaction_id, _), _ in items],
                "lot_id": [lot_id for (_, lot_id), _ in items],
                "account_id": [account_id for _, (account_id, _) in items],
                "points": [points for _, (_, points) in items],
            },
            {},
        )
    if changes.extended:
        await _extend(session, changes.extended)


_EXTEND_POSTGRES = text(
    """
    UPDATE lot SET expires_at = w.expires_at
    FROM unnest(CAST(:accounts AS bigint[]), CAST(:expiries AS timestamptz[]))
        AS w(account_id, expires_at)
    WHERE lot.account_id = w.account_id AND lot.remaining > 0 AND lot.expires_at < w.expires_at
    """
)


async def _extend(session: AsyncSession, extended: Mapping[int, dt.datetime]) -> None:
    """Every open lot of each account expires no earlier than its new expiry: one statement."""
    if is_postgresql(session):
        await session.execute(
            _EXTEND_POSTGRES,
            {"accounts": list(extended), "expiries": list(extended.values())},
        )
        return
    await session.execute(
        update(lot_t)
        .where(
            lot_t.c.account_id == bindparam("b_account"),
            lot_t.c.remaining > 0,
            lot_t.c.expires_at < bindparam("b_expires", type_=lot_t.c.expires_at.type),
        )
        .values(expires_at=bindparam("b_expires", type_=lot_t.c.expires_at.type)),
        [{"b_account": a, "b_expires": e} for a, e in extended.items()],
    )


async def next_expiry(session: AsyncSession, account_id: int) -> tuple[dt.datetime | None, int]:
    """When the account's next open lots expire and their points; ``(None, 0)`` when none do
    (two probes of the open-lots index)."""
    first = await session.scalar(
        select(lot_t.c.expires_at)
        .where(lot_t.c.account_id == account_id, lot_t.c.remaining > 0)
        .order_by(lot_t.c.expires_at)
        .limit(1)
    )
    if first is None or first >= NEVER:
        return None, 0
    points = await session.scalar(
        select(func.sum(lot_t.c.remaining)).where(
            lot_t.c.account_id == account_id,
            lot_t.c.remaining > 0,
            lot_t.c.expires_at == first,
        )
    )
    return first, int(points or 0)
