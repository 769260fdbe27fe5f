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
  and its own hash, SHA-256 over a fixed binary encoding of those fields
  (``exchange.ledger.chain``), so a changed, deleted or inserted posting breaks the chain
  (``exchange.ledger.verify`` finds it). The account row holds the chain's head (balance, seq,
  head hash) and changes only here, under a row lock.
* Concurrency. Accounts are locked with ``SELECT ... ORDER BY id FOR UPDATE``
  (``exchange.dialect.lock_in_id_order``): every transaction takes its locks in the same order,
  so two opposite transfers cannot deadlock. On SQLite, which has no row locks, every
  transaction starts with ``BEGIN IMMEDIATE`` (see ``exchange.db``) and so holds the single
  write lock from its first read.
* Counterparties. Each posting names the account it pairs with (``counterparty_account_id``),
  so that settlement can tell who owes whom from the postings alone, one aggregate over the day
  with no sort by transaction. Per ledger of a transaction, the partners are netted (as
  ``settlement.netting.pair_legs`` does): when a single partner is on the debit side, each leg of
  a partner on the credit side names that partner's (lowest) debited account, and the other way
  round when a single partner is on the credit side; every other leg (the single partner's own,
  a partner that nets to zero, all of a transaction the caller marks unpaired, such as the
  ``settle`` payouts) names its own account. A transaction with several partners on both sides,
  or whose many side has a leg against its partner's net, marks every leg of that ledger
  :data:`~exchange.ledger.chain.SEVERAL_COUNTERPARTIES`, and settlement pairs it with
  ``pair_legs``. The counterparty is in the posting's hash, so it cannot be changed unnoticed
  either.
* Time. ``created_at`` is read once the accounts are locked, so an account's postings are
  stamped in the order of their sequence numbers, and a business day's cutoff splits each
  account's chain in two: settlement relies on that. On PostgreSQL it is the database's clock,
  read by the locking statement itself, so service processes on hosts whose clocks disagree
  still stamp one account's postings in order (only the database's clock stepping back could
  break it); SQLite, in process, uses the process's clock.
* Batches. :func:`post_transactions` posts many transactions under one set of locks: every
  account of every spec locked at once (still in id order), the specs applied in order in
  memory, each one refused alone (its outcome is the refusal, and the specs after it see the
  ledger without it), and what posts written in one statement per table
  (``exchange.ledger.bulk``). A lone transaction is a batch of one: :func:`post_transaction` is
  that call, so there is still one engine. Expired holds are released under the same locks
  (``exchange.ledger.expiry``), and the lots of member accounts opened and consumed
  (``exchange.ledger.lots``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import uuid7
from exchange.dialect import lock_in_id_order
from exchange.errors import (
    DomainError,
    InsufficientPoints,
    LimitExceeded,
    UnbalancedTransaction,
)
from exchange.ledger import bulk
from exchange.ledger.chain import SEVERAL_COUNTERPARTIES, digest
from exchange.ledger.expiry import expire_holds
from exchange.ledger.lots import record_lots
from exchange.ledger.models import Account

_BALANCE_LIMIT = 2**63 - 1  # what a BIGINT (and SQLite's INTEGER) can hold

account_t = cast(Table, Account.__table__)


class Leg(NamedTuple):
    """One intended posting: ``amount`` (signed) on ``account_id``."""

    account_id: int
    amount: int


_NOTHING: Mapping[Any, Any] = MappingProxyType({})


class TransactionSpec(NamedTuple):
    """Everything an operation hands the engine. A NamedTuple, like the engine's answers below:
    a batch makes a thousand, and a frozen dataclass of these eighteen fields cost twice as
    much to build."""

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
    held_changes: Mapping[int, int] = _NOTHING
    """Changes to members' held points (account id -> delta), applied under the same locks."""
    member_refs: Mapping[int, str] = _NOTHING
    """Names for member accounts, for the facts of an ``InsufficientPoints`` refusal."""
    transaction_id: uuid.UUID | None = None
    batch_id: uuid.UUID | None = None
    """The ``POST /v1/batches`` request the transaction is an item of: its ``idempotency_key``
    is then the item's, unique for the partner (a database index holds it)."""
    paired: bool = True
    """``False`` for a transaction that settles obligations rather than creating them (the
    ``settle`` payouts): each of its postings names its own account as counterparty."""


class PostedLine(NamedTuple):
    # NamedTuples, not frozen dataclasses: a batch makes thousands of these, and a frozen
    # dataclass sets each field through object.__setattr__ (about four times the cost).

    account_id: int
    ledger: str
    seq: int
    amount: int
    balance_after: int
    prev_hash: bytes
    hash: bytes
    account_kind: str
    """``member``, ``issuance`` or ``settlement``."""
    counterparty: int
    """The account this posting pairs with (see the design note)."""


class PostedTransaction(NamedTuple):
    id: uuid.UUID
    kind: str
    partner_id: uuid.UUID
    points: int
    created_at: dt.datetime
    postings: tuple[PostedLine, ...]
    balances: Mapping[int, tuple[int, int]]
    """account id -> (balance, held) after the transaction, for every account it touched."""
    reference: str | None = None
    member_refs: Mapping[int, str] = _NOTHING
    """The spec's: enough, with the lines, to show the transaction without reading it back."""


def _check_zero_sum(legs: Iterable[Leg], ledgers: Mapping[int, str]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[ledgers[leg.account_id]] += leg.amount
    unbalanced = {ledger: total for ledger, total in totals.items() if total}
    if unbalanced:
        raise UnbalancedTransaction(f"postings do not sum to zero: {unbalanced}")


_LOCKED_COLUMNS = (
    account_t.c.id,
    account_t.c.ledger,
    account_t.c.kind,
    account_t.c.partner_id,
    account_t.c.balance,
    account_t.c.held,
    account_t.c.seq,
    account_t.c.head_hash,
)
"""What the engine reads of every account a posting touches, under its lock."""


@dataclass
class _Heads:
    """The locked accounts' heads as the specs applied so far leave them."""

    ledger: dict[int, str]
    kind: dict[int, str]
    partner: dict[int, uuid.UUID]
    balance: dict[int, int]
    held: dict[int, int]
    seq: dict[int, int]
    head: dict[int, bytes]


def _counterparties(spec: TransactionSpec, heads: _Heads) -> list[int]:
    """Per leg of ``spec``, the account it pairs with (see the design note)."""
    legs = spec.legs
    own = [leg.account_id for leg in legs]
    partner_of, ledger_of = heads.partner, heads.ledger
    if not spec.paired or len({partner_of[account_id] for account_id in own}) == 1:
        return own  # one partner on every leg (most of them): nobody to pair with
    by_ledger: dict[str, list[int]] = defaultdict(list)
    for index, leg in enumerate(legs):
        by_ledger[ledger_of[leg.account_id]].append(index)
    result = list(own)
    for indices in by_ledger.values():
        nets: dict[uuid.UUID, int] = defaultdict(int)
        for index in indices:
            nets[partner_of[legs[index].account_id]] += legs[index].amount
        debtors = [partner for partner, net in nets.items() if net < 0]
        creditors = [partner for partner, net in nets.items() if net > 0]
        if len(debtors) == 1:
            single, many_sign = debtors[0], 1
        elif len(creditors) == 1:
            single, many_sign = creditors[0], -1
        else:
            if debtors:  # several on both sides
                for index in indices:
                    result[index] = SEVERAL_COUNTERPARTIES
            continue
        anchor = min(
            legs[index].account_id
            for index in indices
            if partner_of[legs[index].account_id] == single and legs[index].amount * many_sign < 0
        )
        many = [
            index for index in indices if nets[partner_of[legs[index].account_id]] * many_sign > 0
        ]
        if any(legs[index].amount * many_sign < 0 for index in many):
            for index in indices:
                result[index] = SEVERAL_COUNTERPARTIES
            continue
        for index in many:
            result[index] = anchor
    return result


def _chain(
    spec: TransactionSpec, heads: _Heads, transaction_bytes: bytes
) -> tuple[list[PostedLine], DomainError | None]:
    """Chain each leg of ``spec`` onto its account's head, moving the head; stop at a balance
    that would leave the ledger's range, with that refusal."""
    balance, seq, head = heads.balance, heads.seq, heads.head
    ledger_of, kind_of = heads.ledger, heads.kind
    lines: list[PostedLine] = []
    for (account_id, amount), counterparty in zip(
        spec.legs, _counterparties(spec, heads), strict=True
    ):
        new_balance = balance[account_id] + amount
        if not -_BALANCE_LIMIT <= new_balance <= _BALANCE_LIMIT:
            return lines, LimitExceeded(f"account {account_id} would leave the ledger's range")
        new_seq = seq[account_id] + 1
        previous = head[account_id]
        hashed = digest(
            account_id, new_seq, transaction_bytes, amount, new_balance, previous, counterparty
        )
        lines.append(
            PostedLine(
                account_id, ledger_of[account_id], new_seq, amount, new_balance, previous,
                hashed, kind_of[account_id], counterparty,
            )
        )  # fmt: skip
        balance[account_id], seq[account_id], head[account_id] = new_balance, new_seq, hashed
    return lines, None


_Before = list[tuple[int, int, int, int, bytes]]
"""(account id, balance, held, seq, head) of the accounts a spec touches, before it."""


def _member_short(spec: TransactionSpec, heads: _Heads, before: _Before) -> DomainError | None:
    """The refusal for the first member ``spec`` leaves short: only a member's available points
    (balance less held) may not go below zero."""
    balance, held, kind_of = heads.balance, heads.held, heads.kind
    for account_id, old_balance, old_held, _, _ in before:
        available = balance[account_id] - held[account_id]
        if available < 0 and kind_of[account_id] == "member":
            was = old_balance - old_held
            return InsufficientPoints(
                spec.member_refs.get(account_id, str(account_id)), was, was - available
            )
    return None


def _apply(
    spec: TransactionSpec, heads: _Heads, now: dt.datetime
) -> PostedTransaction | DomainError:
    """Chain one spec onto ``heads``. A refusal (a member short of points, a balance out of
    range) is returned and leaves ``heads`` as it was; otherwise ``heads`` move past the spec."""
    # Written for speed: a batch calls this a thousand times. The transaction id's bytes are
    # taken once, and what the spec touches is saved as a list to undo a refusal.
    balance, held, seq, head = heads.balance, heads.held, heads.seq, heads.head
    touched = {leg[0] for leg in spec.legs}
    if spec.held_changes:
        touched.update(spec.held_changes)
    before = [
        (account_id, balance[account_id], held[account_id], seq[account_id], head[account_id])
        for account_id in sorted(touched)
    ]
    transaction_id = spec.transaction_id or uuid7()
    for account_id, delta in spec.held_changes.items():
        held[account_id] += delta
    lines, refusal = _chain(spec, heads, transaction_id.bytes)
    if refusal is None:
        refusal = _member_short(spec, heads, before)
    if refusal is not None:
        for account_id, old_balance, old_held, old_seq, old_head in before:
            balance[account_id], held[account_id] = old_balance, old_held
            seq[account_id], head[account_id] = old_seq, old_head
        return refusal
    return PostedTransaction(
        transaction_id,
        spec.kind,
        spec.partner_id,
        spec.points,
        now,
        tuple(lines),
        {account_id: (balance[account_id], held[account_id]) for account_id in touched},
        spec.reference,
        spec.member_refs,
    )


async def _lock(
    session: AsyncSession, specs: Sequence[TransactionSpec]
) -> tuple[Sequence[Any], _Heads, dt.datetime]:
    """Lock every account of every spec in id order and check each spec sums to zero; the
    accounts' heads, with expired holds released, and the time read under the locks."""
    touched = sorted(
        {leg.account_id for spec in specs for leg in spec.legs}
        | {account_id for spec in specs for account_id in spec.held_changes}
    )
    # The time is read under the locks: each account's postings are then stamped in sequence
    # order. On PostgreSQL it is the database's clock, one clock for every service process and
    # host: a host whose clock lags cannot stamp a posting before the one it follows on the
    # chain, which would move it across a business day's cutoff (settlement relies on that).
    locked, now = await lock_in_id_order(session, _LOCKED_COLUMNS, touched)
    if len(locked) != len(touched):
        raise LookupError(f"unknown accounts among {touched}")
    heads = _Heads({}, {}, {}, {}, {}, {}, {})
    with_holds: list[int] = []
    # One pass, the rows unpacked as tuples (a Row's attributes cost more than its items).
    for account_id, ledger, kind, partner_id, balance, held, seq, head_hash, *_ in locked:
        heads.ledger[account_id], heads.kind[account_id] = ledger, kind
        heads.partner[account_id], heads.balance[account_id] = partner_id, balance
        heads.held[account_id], heads.seq[account_id] = held, seq
        heads.head[account_id] = head_hash
        if kind == "member" and held > 0:
            with_holds.append(account_id)
    for spec in specs:
        _check_zero_sum(spec.legs, heads.ledger)
    # Expired holds stop counting the moment anyone looks; release them before checking. The
    # holds these transactions capture or void are not among them: the service found them
    # active and their ``held_changes`` release them, so expiring them here too would free
    # their points twice.
    keep = {spec.hold_id for spec in specs if spec.hold_id is not None}
    expired = await expire_holds(session, with_holds, now, keep=keep)
    for account_id, freed in expired.items():
        heads.held[account_id] -= freed
    return locked, heads, now


async def post_transaction(session: AsyncSession, spec: TransactionSpec) -> PostedTransaction:
    """Lock, check, chain and write one transaction, inside the caller's database transaction:
    :func:`post_transactions` with one spec, its refusal raised."""
    (outcome,) = await post_transactions(session, [spec])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


async def post_transactions(
    session: AsyncSession, specs: Sequence[TransactionSpec]
) -> list[PostedTransaction | DomainError]:
    """Lock, check, chain and write several transactions at once, inside the caller's database
    transaction; one outcome per spec, in order.

    Every account of every spec is locked in one ``ORDER BY id FOR UPDATE`` and expired holds
    are released once; then the specs are applied in order, in memory. A spec that would make a
    member short of points (or a balance leave the ledger's range) gets its refusal as its
    outcome and changes nothing: the specs after it see the ledger without it. What posts is
    written in three statements (transactions, postings, account heads), however many specs,
    and the member accounts' lots in a few more (``exchange.ledger.lots``)."""
    if not specs:
        return []
    locked, heads, now = await _lock(session, specs)
    outcomes = [_apply(spec, heads, now) for spec in specs]
    posted = [
        (spec, outcome)
        for spec, outcome in zip(specs, outcomes, strict=True)
        if isinstance(outcome, PostedTransaction)
    ]
    await bulk.insert_transactions(session, posted, now)
    await bulk.insert_postings(session, posted, now)
    await record_lots(session, posted, heads.partner, now)
    changed = [
        account_id
        for account_id, _, _, _, _, held, seq, *_ in locked
        if heads.seq[account_id] != seq or heads.held[account_id] != held
    ]
    await bulk.update_heads(
        session,
        {
            "id": changed,
            "balance": [heads.balance[account_id] for account_id in changed],
            "held": [heads.held[account_id] for account_id in changed],
            "seq": [heads.seq[account_id] for account_id in changed],
            "head_hash": [heads.head[account_id] for account_id in changed],
        },
    )
    return outcomes
