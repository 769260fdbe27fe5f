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
* Counterparties. Each posting names the account it pairs with (``counterparty_account_id``),
  so that settlement can tell who owes whom from the postings alone, one aggregate over the day
  with no sort by transaction. Per ledger of a transaction, the partners are netted (as
  ``settlement.netting.pair_legs`` does): when a single partner is on the debit side, each leg of
  a partner on the credit side names that partner's (lowest) debited account, and the other way
  round when a single partner is on the credit side; every other leg (the single partner's own,
  a partner that nets to zero, all of a transaction the caller marks unpaired, such as the
  ``settle`` payouts) names its own account. A transaction with several partners on both sides,
  or whose many side has a leg against its partner's net, marks every leg of that ledger
  :data:`SEVERAL_COUNTERPARTIES`, and settlement pairs it with ``pair_legs``. The counterparty is
  in the posting's hash (encoding version 2), so it cannot be changed unnoticed either.
* Time. ``created_at`` is read once the accounts are locked, so an account's postings are
  stamped in the order of their sequence numbers, and a business day's cutoff splits each
  account's chain in two: settlement relies on that. On PostgreSQL it is the database's clock,
  read by the locking statement itself, so service processes on hosts whose clocks disagree
  still stamp one account's postings in order (only the database's clock stepping back could
  break it); SQLite, in process, uses the process's clock.
* Batches. :func:`post_transactions` posts many transactions under one set of locks: every
  account of every spec locked at once (still in id order), the specs applied in order in
  memory, each one refused alone (its outcome is the refusal, and the specs after it see the
  ledger without it), and what posts written in one statement per table. A lone transaction is
  a batch of one: :func:`post_transaction` is that call, so there is still one engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Table,
    any_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.errors import (
    DomainError,
    InsufficientPoints,
    LimitExceeded,
    UnbalancedTransaction,
)
from exchange.ledger.models import Account, Hold, LedgerTransaction, Posting

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of an account's first posting."""

_BALANCE_LIMIT = 2**63 - 1  # what a BIGINT (and SQLite's INTEGER) can hold

account_t = cast(Table, Account.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)
hold_t = cast(Table, Hold.__table__)

# prefix, account id, seq, transaction id, amount, balance after, previous hash: fixed widths,
# so no two different postings can encode to the same bytes. Version 2 appends the counterparty
# account; a posting without one (written before counterparties were recorded) keeps version 1,
# so that its hash still holds, and the prefix tells the two encodings apart.
_POSTING_LAYOUT = struct.Struct(">11sqq16sqq32s")
_POSTING_PREFIX = b"posting/v1\x00"
_POSTING_LAYOUT_V2 = struct.Struct(">11sqq16sqq32sq")
_POSTING_PREFIX_V2 = b"posting/v2\x00"
_PACK_V2 = _POSTING_LAYOUT_V2.pack
_sha256 = hashlib.sha256

SEVERAL_COUNTERPARTIES = 0
"""The ``counterparty_account_id`` of every posting of a transaction that has several partners
on both sides of a ledger: settlement pairs those with ``settlement.netting.pair_legs``."""


def _digest_v2(
    account_id: int,
    seq: int,
    transaction_bytes: bytes,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
    counterparty: int,
) -> bytes:
    """The version 2 hash, from the transaction id's bytes (the engine takes them once per
    transaction)."""
    return _sha256(
        _PACK_V2(
            _POSTING_PREFIX_V2, account_id, seq, transaction_bytes, amount, balance_after,
            prev_hash, counterparty,
        )
    ).digest()  # fmt: skip


def posting_hash(
    account_id: int,
    seq: int,
    transaction_id: uuid.UUID,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
    counterparty: int | None = None,
) -> bytes:
    """SHA-256 over a fixed-width binary encoding: no separators, no text to normalise."""
    if counterparty is not None:
        return _digest_v2(
            account_id, seq, transaction_id.bytes, amount, balance_after, prev_hash, counterparty
        )
    packed = _POSTING_LAYOUT.pack(
        _POSTING_PREFIX, account_id, seq, transaction_id.bytes, amount, balance_after, prev_hash
    )
    return _sha256(packed).digest()


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


async def _release_expired_holds(
    session: AsyncSession,
    account_ids: Sequence[int],
    now: dt.datetime,
    keep: Collection[uuid.UUID] = (),
) -> dict[int, int]:
    """Mark expired active holds of these (locked) accounts, except those in ``keep``; return
    the points each frees."""
    if not account_ids:
        return {}
    conditions = [
        one_of(session, hold_t.c.account_id, account_ids),
        hold_t.c.status == "active",
        hold_t.c.expires_at <= now,
    ]
    if keep:
        conditions.append(hold_t.c.id.not_in(sorted(keep)))
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
_LOCK = (
    select(*_LOCKED_COLUMNS)
    .where(account_t.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(account_t.c.id)
    .with_for_update()
)
_locked_pg = (
    select(*_LOCKED_COLUMNS)
    .where(account_t.c.id == any_(bindparam("ids", type_=ARRAY(account_t.c.id.type))))
    .order_by(account_t.c.id)
    .with_for_update()
    .subquery("locked")
)
_LOCK_PG = select(
    *_locked_pg.c, func.clock_timestamp(type_=DateTime(timezone=True)).label("locked_at")
)
"""Every account a posting touches, locked in id order (one array on PostgreSQL). On PostgreSQL
each row comes with the database's clock read as it leaves the lock, so the last row's is read
once every account is locked (the outer query pulls each row through the locking one)."""


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_of(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one bound array, so that the
    statement's text (and asyncpg's prepared statement for it) is the same however many values
    there are. ``IN`` expands to one parameter per value: a new statement to compile and prepare
    for every length, and a thousand parameters to render for a batch."""
    if _is_postgres(session):
        return cast(
            ColumnElement[bool],
            column == any_(bindparam(None, list(values), type_=ARRAY(column.type))),
        )
    return cast(ColumnElement[bool], column.in_(values))


def _unnested(table: Table, columns: Iterable[str]) -> Any:
    """``unnest(:a_x, :a_y, ...) AS v(x, y, ...)``: the columns, each bound as one array."""
    arrays = [bindparam(f"a_{name}", type_=ARRAY(table.c[name].type)) for name in columns]
    return func.unnest(*arrays).table_valued(*columns).render_derived()


def _arrays(columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    return {f"a_{name}": values for name, values in columns.items()}


def _rows(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


# Statements are built once per shape and kept: building a SQLAlchemy statement and computing its
# cache key costs more than executing it, and these run on every posting request.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _insert_statement(table: Table, columns: tuple[str, ...], constants: tuple[str, ...]) -> Any:
    key = ("insert", table.name, columns, constants)
    statement = _STATEMENTS.get(key)
    if statement is None:
        rows = _unnested(table, columns)
        values = [
            *(rows.c[name] for name in columns),
            *(bindparam(f"c_{name}", type_=table.c[name].type) for name in constants),
        ]
        statement = insert(table).from_select([*columns, *constants], select(*values))
        _STATEMENTS[key] = statement
    return statement


_COPY_FROM_ROWS = 64
"""From this many rows, :func:`_insert` hands PostgreSQL the rows by ``COPY`` (binary)."""


async def _copy_driver(session: AsyncSession) -> Any:
    """The session's asyncpg connection, if it is inside the session's transaction."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None


async def _insert(
    session: AsyncSession,
    table: Table,
    columns: Mapping[str, list[Any]],
    constants: Mapping[str, Any],
) -> None:
    """Insert rows given column by column, with ``constants`` the same in every row.

    On PostgreSQL, a few rows go in one statement (``INSERT ... SELECT * FROM unnest(<one array
    per column>)``), one round trip where an executemany costs one statement each. A batch's
    rows go by binary ``COPY``, in the same transaction (its triggers fire as for an INSERT):
    asyncpg encodes a record's values without the per-element checks it makes of an array's,
    which for a batch's 2 000 postings halved the client's time and cut the server's by a third
    (no ``unnest`` to expand). ``COPY`` takes the values as they are, past SQLAlchemy's bind
    processing; the engine's values are already what the driver sends (UUIDs, ints, bytes,
    text, an aware UTC datetime). SQLite, in process, takes the executemany."""
    if not _is_postgres(session):
        await session.execute(insert(table), [{**row, **constants} for row in _rows(columns)])
        return
    count = len(next(iter(columns.values())))
    if count >= _COPY_FROM_ROWS:
        driver = await _copy_driver(session)
        if driver is not None:
            fixed = [repeat(value, count) for value in constants.values()]
            await driver.copy_records_to_table(
                table.name,
                records=list(zip(*columns.values(), *fixed, strict=True)),
                columns=[*columns, *constants],
            )
            return
    statement = _insert_statement(table, tuple(columns), tuple(constants))
    await session.execute(
        statement,
        {**_arrays(columns), **{f"c_{name}": value for name, value in constants.items()}},
    )


async def _update_heads(session: AsyncSession, columns: Mapping[str, list[Any]]) -> None:
    """Write the new heads (balance, held, seq, head hash) of the accounts, by id."""
    values = [name for name in columns if name != "id"]
    if not _is_postgres(session):
        await session.execute(
            update(account_t)
            .where(account_t.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in values}),
            [{f"b_{name}": value for name, value in row.items()} for row in _rows(columns)],
        )
        return
    key = ("heads", tuple(columns))
    statement = _STATEMENTS.get(key)
    if statement is None:
        heads = _unnested(account_t, columns)
        statement = (
            update(account_t)
            .where(account_t.c.id == heads.c.id)
            .values({name: heads.c[name] for name in values})
        )
        _STATEMENTS[key] = statement
    await session.execute(statement, _arrays(columns))


async def post_transaction(session: AsyncSession, spec: TransactionSpec) -> PostedTransaction:
    """Lock, check, chain and write one transaction, inside the caller's database transaction:
    :func:`post_transactions` with one spec, its refusal raised."""
    (outcome,) = await post_transactions(session, [spec])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


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


def _apply(
    spec: TransactionSpec, heads: _Heads, now: dt.datetime
) -> PostedTransaction | DomainError:
    """Chain one spec onto ``heads``. A refusal (a member short of points, a balance out of
    range) is returned and leaves ``heads`` as it was; otherwise ``heads`` move past the spec."""
    # Written for speed: a batch calls this a thousand times. The transaction id's bytes are
    # taken once, and what the spec touches is saved as a list to undo a refusal.
    balance, held, seq, head = heads.balance, heads.held, heads.seq, heads.head
    ledger_of, kind_of = heads.ledger, heads.kind
    legs, held_changes = spec.legs, spec.held_changes
    touched = {leg[0] for leg in legs}
    if held_changes:
        touched.update(held_changes)
    before = [
        (account_id, balance[account_id], held[account_id], seq[account_id], head[account_id])
        for account_id in sorted(touched)
    ]
    transaction_id = spec.transaction_id or uuid7()
    transaction_bytes = transaction_id.bytes
    for account_id, delta in held_changes.items():
        held[account_id] += delta
    counterparties = _counterparties(spec, heads)
    lines: list[PostedLine] = []
    refusal: DomainError | None = None
    for (account_id, amount), counterparty in zip(legs, counterparties, strict=True):
        new_balance = balance[account_id] + amount
        if not -_BALANCE_LIMIT <= new_balance <= _BALANCE_LIMIT:
            refusal = LimitExceeded(f"account {account_id} would leave the ledger's range")
            break
        new_seq = seq[account_id] + 1
        previous = head[account_id]
        digest = _digest_v2(
            account_id, new_seq, transaction_bytes, amount, new_balance, previous, counterparty
        )
        lines.append(
            PostedLine(
                account_id, ledger_of[account_id], new_seq, amount, new_balance, previous,
                digest, kind_of[account_id], counterparty,
            )
        )  # fmt: skip
        balance[account_id], seq[account_id], head[account_id] = new_balance, new_seq, digest
    else:
        # Only a member's available points (balance less held) may not go below zero.
        for account_id, old_balance, old_held, _, _ in before:
            available = balance[account_id] - held[account_id]
            if available < 0 and kind_of[account_id] == "member":
                was = old_balance - old_held
                refusal = InsufficientPoints(
                    spec.member_refs.get(account_id, str(account_id)), was, was - available
                )
                break
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


async def post_transactions(
    session: AsyncSession, specs: Sequence[TransactionSpec]
) -> list[PostedTransaction | DomainError]:
    """Lock, check, chain and write several transactions at once, inside the caller's database
    transaction; one outcome per spec, in order.

    Every account of every spec is locked in one ``ORDER BY id FOR UPDATE`` and expired holds
    are released once; then the specs are applied in order, in memory. A spec that would make a
    member short of points (or a balance leave the ledger's range) gets its refusal as its
    outcome and changes nothing: the specs after it see the ledger without it. What posts is
    written in three statements (transactions, postings, account heads), however many specs."""
    if not specs:
        return []
    touched = sorted(
        {leg.account_id for spec in specs for leg in spec.legs}
        | {account_id for spec in specs for account_id in spec.held_changes}
    )
    postgres = _is_postgres(session)
    locked = (await session.execute(_LOCK_PG if postgres else _LOCK, {"ids": touched})).all()
    if len(locked) != len(touched):
        raise LookupError(f"unknown accounts among {touched}")
    # Read under the locks: each account's postings are then stamped in sequence order. On
    # PostgreSQL it is the database's clock, one clock for every service process and host: a
    # host whose clock lags cannot stamp a posting before the one it follows on the chain,
    # which would move it across a business day's cutoff (settlement relies on the order).
    now = (max((row[-1] for row in locked), default=None) if postgres else None) or utcnow()
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
    expired = await _release_expired_holds(session, with_holds, now, keep=keep)
    for account_id, freed in expired.items():
        heads.held[account_id] -= freed

    outcomes = [_apply(spec, heads, now) for spec in specs]
    posted = [
        (spec, outcome)
        for spec, outcome in zip(specs, outcomes, strict=True)
        if isinstance(outcome, PostedTransaction)
    ]
    if posted:
        await _insert(
            session,
            transaction_t,
            {
                "id": [outcome.id for _, outcome in posted],
                "kind": [spec.kind for spec, _ in posted],
                "partner_id": [spec.partner_id for spec, _ in posted],
                "points": [spec.points for spec, _ in posted],
                "reference": [spec.reference for spec, _ in posted],
                "idempotency_key": [spec.idempotency_key for spec, _ in posted],
                "batch_id": [spec.batch_id for spec, _ in posted],
                "rate_version_id": [spec.rate_version_id for spec, _ in posted],
                "reverses_id": [spec.reverses_id for spec, _ in posted],
                "hold_id": [spec.hold_id for spec, _ in posted],
                "details": [
                    json.dumps(spec.details, sort_keys=True) if spec.details else None
                    for spec, _ in posted
                ],
            },
            {"created_at": now},
        )
    lines = [(outcome.id, line) for _, outcome in posted for line in outcome.postings]
    if lines:
        await _insert(
            session,
            posting_t,
            {
                "transaction_id": [transaction_id for transaction_id, _ in lines],
                "account_id": [line.account_id for _, line in lines],
                "ledger": [line.ledger for _, line in lines],
                "seq": [line.seq for _, line in lines],
                "amount": [line.amount for _, line in lines],
                "balance_after": [line.balance_after for _, line in lines],
                "prev_hash": [line.prev_hash for _, line in lines],
                "hash": [line.hash for _, line in lines],
                "counterparty_account_id": [line.counterparty for _, line in lines],
            },
            {"created_at": now},
        )
    changed = [
        account_id
        for account_id, _, _, _, _, held, seq, *_ in locked
        if heads.seq[account_id] != seq or heads.held[account_id] != held
    ]
    if changed:
        await _update_heads(
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
