"""The one posting engine. Nothing else writes postings.

Design note
-----------
* Ledgers. One ledger per points currency (a brand's code, such as ``SKY``) and one money ledger
  (the settlement currency, amounts in micros). Every account lives on exactly one ledger.
* Accounts. ``member`` accounts hold a member's points and are never negative; a brand's
  ``issuance`` accounts are the other side of every issue and redeem, so their balance is minus
  the points outstanding; ``settlement`` accounts on the money ledger hold what a participant is
  owed (positive) or owes (negative). A brand's issuance account (and every participant's
  settlement account) is split into ``partner.shards`` accounts and a member always meets the
  same shard (``member account id % shards``), so one brand's traffic is spread over several rows
  instead of queueing on one lock. The issuance balance of a brand is the sum of its shards.
* Signs. ``amount`` is signed: ``balance_after = previous balance + amount``. Earning credits the
  member (+P) and debits issuance (-P).
* Invariants. In each transaction the postings of each ledger sum to zero. A member account's
  ``balance - held`` (its available points) never goes below zero. Postings are append-only:
  each carries its account's ``seq`` (1, 2, ...), ``balance_after``, the previous posting's hash
  and its own hash, SHA-256 over a fixed binary encoding of those fields, so a changed, deleted or
  inserted posting breaks the chain (``exchange.ledger.verify`` finds it). The account row holds
  the chain's head (balance, seq, head hash) and changes only here, under a row lock.
* Concurrency. Accounts are locked with ``SELECT ... ORDER BY id FOR UPDATE``: every transaction
  takes its locks in the same order, so two opposite transfers cannot deadlock. On SQLite, which
  has no row locks, every transaction starts with ``BEGIN IMMEDIATE`` (see ``exchange.db``) and so
  holds the single write lock from its first read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.errors import InsufficientPoints, LimitExceeded, UnbalancedTransaction
from exchange.ledger.models import Account, Hold, LedgerTransaction, Posting

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of an account's first posting."""

_BALANCE_LIMIT = 2**63 - 1  # what a BIGINT (and SQLite's INTEGER) can hold

account_t = Account.__table__
posting_t = Posting.__table__
transaction_t = LedgerTransaction.__table__
hold_t = Hold.__table__

# prefix, account id, seq, transaction id, amount, balance after, previous hash: fixed widths,
# so no two different postings can encode to the same bytes.
_POSTING_LAYOUT = struct.Struct(">11sqq16sqq32s")
_POSTING_PREFIX = b"posting/v1\x00"


def posting_hash(
    account_id: int,
    seq: int,
    transaction_id: uuid.UUID,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
) -> bytes:
    """SHA-256 over a fixed-width binary encoding: no separators, no text to normalise."""
    return hashlib.sha256(
        _POSTING_LAYOUT.pack(
            _POSTING_PREFIX, account_id, seq, transaction_id.bytes, amount, balance_after, prev_hash
        )
    ).digest()


@dataclass(frozen=True)
class Leg:
    """One intended posting: ``amount`` (signed) on ``account_id``."""

    account_id: int
    amount: int


@dataclass(frozen=True)
class TransactionSpec:
    """Everything an operation hands the engine."""

    kind: str
    partner_id: uuid.UUID
    legs: Sequence[Leg] = ()
    points: int = 0
    reference: str | None = None
    idempotency_key: str | None = None
    rate_version_id: uuid.UUID | None = None
    reverses_id: uuid.UUID | None = None
    hold_id: uuid.UUID | None = None
    details: Mapping[str, Any] | None = None
    held_changes: Mapping[int, int] = field(default_factory=dict)
    """Changes to members' held points (account id -> delta), applied under the same locks."""
    member_refs: Mapping[int, str] = field(default_factory=dict)
    """Names for member accounts, for the facts of an ``InsufficientPoints`` refusal."""
    transaction_id: uuid.UUID | None = None


@dataclass(frozen=True)
class PostedLine:
    account_id: int
    ledger: str
    seq: int
    amount: int
    balance_after: int
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class PostedTransaction:
    id: uuid.UUID
    kind: str
    partner_id: uuid.UUID
    points: int
    created_at: dt.datetime
    postings: tuple[PostedLine, ...]
    balances: Mapping[int, tuple[int, int]]
    """account id -> (balance, held) after the transaction, for every account it touched."""


def _check_zero_sum(legs: Iterable[Leg], ledgers: Mapping[int, str]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[ledgers[leg.account_id]] += leg.amount
    unbalanced = {ledger: total for ledger, total in totals.items() if total}
    if unbalanced:
        raise UnbalancedTransaction(f"postings do not sum to zero: {unbalanced}")


async def _release_expired_holds(
    session: AsyncSession,
    account_ids: Sequence[int],
    now: dt.datetime,
    keep: uuid.UUID | None = None,
) -> dict[int, int]:
    """Mark expired active holds of these (locked) accounts, except ``keep``; return the points
    each frees."""
    if not account_ids:
        return {}
    conditions = [
        hold_t.c.account_id.in_(account_ids),
        hold_t.c.status == "active",
        hold_t.c.expires_at <= now,
    ]
    if keep is not None:
        conditions.append(hold_t.c.id != keep)
    rows = await session.execute(
        update(hold_t)
        .where(*conditions)
        .values(status="expired", closed_at=now)
        .returning(hold_t.c.account_id, hold_t.c.points)
    )
    freed: dict[int, int] = defaultdict(int)
    for account_id, points in rows:
        freed[account_id] += points
    return freed


async def post_transaction(session: AsyncSession, spec: TransactionSpec) -> PostedTransaction:
    """Lock, check, chain and write one transaction, inside the caller's database transaction."""
    now = utcnow()
    touched = sorted({leg.account_id for leg in spec.legs} | set(spec.held_changes))
    locked = (
        await session.execute(
            select(
                account_t.c.id,
                account_t.c.ledger,
                account_t.c.kind,
                account_t.c.balance,
                account_t.c.held,
                account_t.c.seq,
                account_t.c.head_hash,
            )
            .where(account_t.c.id.in_(touched))
            .order_by(account_t.c.id)
            .with_for_update()
        )
    ).all()
    if len(locked) != len(touched):
        raise LookupError(f"unknown accounts among {touched}")
    heads = {row.id: row for row in locked}
    _check_zero_sum(spec.legs, {row.id: row.ledger for row in locked})

    # Expired holds stop counting the moment anyone looks; release them before checking. The
    # hold this transaction captures or voids is not one of them: the service found it active
    # and its ``held_changes`` release it, so expiring it here too would free its points twice.
    held = {row.id: row.held for row in locked}
    with_holds = [row.id for row in locked if row.kind == "member" and row.held > 0]
    expired = await _release_expired_holds(session, with_holds, now, keep=spec.hold_id)
    for account_id, freed in expired.items():
        held[account_id] -= freed

    available_before = {row.id: row.balance - held[row.id] for row in locked}
    transaction_id = spec.transaction_id or uuid7()
    balance = {row.id: row.balance for row in locked}
    seq = {row.id: row.seq for row in locked}
    head = {row.id: row.head_hash for row in locked}
    for account_id, delta in spec.held_changes.items():
        held[account_id] += delta
    lines: list[PostedLine] = []
    for leg in spec.legs:
        account_id = leg.account_id
        new_balance = balance[account_id] + leg.amount
        if abs(new_balance) > _BALANCE_LIMIT:
            raise LimitExceeded(f"account {account_id} would leave the ledger's range")
        seq[account_id] += 1
        digest = posting_hash(
            account_id, seq[account_id], transaction_id, leg.amount, new_balance, head[account_id]
        )
        lines.append(
            PostedLine(
                account_id, heads[account_id].ledger, seq[account_id], leg.amount,
                new_balance, head[account_id], digest,
            )
        )  # fmt: skip
        balance[account_id] = new_balance
        head[account_id] = digest
    for row in locked:
        if row.kind != "member":
            continue
        # Only a debit or a new hold can make a member short; a credit never refuses.
        available = balance[row.id] - held[row.id]
        if available < 0:
            before = available_before[row.id]
            raise InsufficientPoints(
                spec.member_refs.get(row.id, str(row.id)), before, before - available
            )

    await session.execute(
        insert(transaction_t).values(
            id=transaction_id,
            kind=spec.kind,
            partner_id=spec.partner_id,
            points=spec.points,
            reference=spec.reference,
            idempotency_key=spec.idempotency_key,
            rate_version_id=spec.rate_version_id,
            reverses_id=spec.reverses_id,
            hold_id=spec.hold_id,
            details=json.dumps(spec.details, sort_keys=True) if spec.details else None,
            created_at=now,
        )
    )
    if lines:
        await session.execute(
            insert(posting_t),
            [
                {
                    "transaction_id": transaction_id,
                    "account_id": line.account_id,
                    "ledger": line.ledger,
                    "seq": line.seq,
                    "amount": line.amount,
                    "balance_after": line.balance_after,
                    "prev_hash": line.prev_hash,
                    "hash": line.hash,
                    "created_at": now,
                }
                for line in lines
            ],
        )
    changed = [row.id for row in locked if seq[row.id] != row.seq or held[row.id] != row.held]
    if changed:
        await session.execute(
            update(account_t)
            .where(account_t.c.id == bindparam("b_id"))
            .values(
                balance=bindparam("b_balance"),
                held=bindparam("b_held"),
                seq=bindparam("b_seq"),
                head_hash=bindparam("b_head"),
            ),
            [
                {
                    "b_id": account_id,
                    "b_balance": balance[account_id],
                    "b_held": held[account_id],
                    "b_seq": seq[account_id],
                    "b_head": head[account_id],
                }
                for account_id in changed
            ],
        )
    return PostedTransaction(
        id=transaction_id,
        kind=spec.kind,
        partner_id=spec.partner_id,
        points=spec.points,
        created_at=now,
        postings=tuple(lines),
        balances={account_id: (balance[account_id], held[account_id]) for account_id in touched},
    )


async def release_expired_holds(session: AsyncSession, now: dt.datetime | None = None) -> int:
    """Sweep every account with expired holds (a periodic job); returns how many were released."""
    now = now or utcnow()
    candidates = (
        (
            await session.execute(
                select(hold_t.c.account_id)
                .where(hold_t.c.status == "active", hold_t.c.expires_at <= now)
                .distinct()
            )
        )
        .scalars()
        .all()
    )
    if not candidates:
        return 0
    locked = (
        await session.execute(
            select(account_t.c.id, account_t.c.held)
            .where(account_t.c.id.in_(sorted(candidates)))
            .order_by(account_t.c.id)
            .with_for_update()
        )
    ).all()
    freed = await _release_expired_holds(session, [row.id for row in locked], now)
    if freed:
        await session.execute(
            update(account_t)
            .where(account_t.c.id == bindparam("b_id"))
            .values(held=account_t.c.held - bindparam("b_freed")),
            [{"b_id": account_id, "b_freed": points} for account_id, points in freed.items()],
        )
    return len(freed)


async def active_held(
    session: AsyncSession, account_id: int, now: dt.datetime | None = None
) -> int:
    """Points held on an account by holds that are active and not yet expired."""
    now = now or utcnow()
    total = await session.scalar(
        select(func.coalesce(func.sum(hold_t.c.points), 0)).where(
            hold_t.c.account_id == account_id,
            hold_t.c.status == "active",
            hold_t.c.expires_at > now,
        )
    )
    return int(total or 0)
