"""``ledger verify``: recompute every chain, balance and zero-sum from the postings alone.

A single changed, deleted or inserted posting shows up here: a changed one no longer hashes to
what the next posting (or the account head) chained to, a deleted one leaves a gap in its
account's sequence, an inserted one runs past the account head or breaks a sequence, and each of
them leaves its transaction unbalanced.

Memory grows with the number of accounts (their heads and running walks are kept) and stays flat
in the number of postings, which are streamed in id order (every account's seq order).

One module, though a long one: the walk, its second half in another process and the join of
the two share one walk state and one wording of faults, and read best side by side (the second
half must name a bad posting exactly as a single walk would)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from exchange.dialect import aggregate_in_memory, can_read_apart, chunks, uuid_bytes
from exchange.ledger.chain import GENESIS_HASH, POSTING_LAYOUT, POSTING_PREFIX, posting_hash
from exchange.ledger.lot_checks import lot_faults
from exchange.ledger.models import Account, Hold, Posting

MAX_FAULTS = 100
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
_CHUNK = 20_000

account_t = Account.__table__
posting_t = Posting.__table__
hold_t = Hold.__table__


@dataclass
class Fault:
    kind: str
    detail: str
    account_id: int | None = None
    posting_id: int | None = None
    seq: int | None = None
    transaction_id: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, uuid.UUID) or type(v).__name__ == "UUID" else v)
            for k, v in self.__dict__.items()
        }


@dataclass
class VerifyReport:
    accounts: int = 0
    postings: int = 0
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def add(self, fault: Fault) -> None:
        if len(self.faults) < MAX_FAULTS:
            self.faults.append(fault)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "postings": self.postings,
            "first_fault": self.faults[0].as_dict() if self.faults else None,
            "faults": [fault.as_dict() for fault in self.faults],
        }


class _Walk:
    """The running state of one account's chain. A walk that starts part-way (``open``) takes
    its start from the first posting it meets, which it keeps (``first``) so that the walk
    before it can check that the two meet."""

    __slots__ = ("account", "balance", "beyond_head", "first", "head", "seq")

    def __init__(self, account: Any, *, open: bool = False) -> None:
        self.account = account
        self.balance = 0
        # -1 for an open walk: no posting follows on from it, so the first one it meets goes to
        # ``_check_posting``, which starts it there.
        self.seq = -1 if open else 0
        self.head = GENESIS_HASH
        # The first posting past the account row's seq: one the engine never wrote.
        self.beyond_head: int | None = None
        self.first: tuple[Any, ...] | None = None


def _close(walk: _Walk, report: VerifyReport) -> None:
    account_id, _ledger, kind, balance, seq, head = walk.account
    if (balance, seq, head) != (walk.balance, walk.seq, walk.head):
        missing = seq > walk.seq
        report.add(
            Fault(
                "account-head",
                f"account {account_id} head says balance {balance} at seq {seq}, its postings "
                f"give balance {walk.balance} at seq {walk.seq}"
                + (f" (seq {walk.seq + 1}..{seq} missing)" if missing else "")
                + (
                    f" (posting {walk.beyond_head} is past the head)"
                    if walk.beyond_head is not None
                    else ""
                ),
                account_id=account_id,
                posting_id=walk.beyond_head,
                seq=walk.seq + 1 if missing else seq,
            )
        )
    if kind == "member" and walk.balance < 0:
        report.add(Fault("negative-member", f"member account {account_id} is negative", account_id))


def _link_problem(
    walk: _Walk, posting_id: int, seq: int, amount: int, balance_after: int, prev_hash: bytes
) -> str | None:
    """Why a posting does not follow on from where its account's walk stands, if it does not."""
    expected = walk.seq + 1
    if seq != expected:
        return f"posting {posting_id} has seq {seq}, expected {expected}" + (
            f" (seq {expected}..{seq - 1} missing)" if seq > expected else ""
        )
    if prev_hash != walk.head:
        return f"posting {posting_id} does not chain to the posting before it"
    if balance_after != walk.balance + amount:
        return (
            f"posting {posting_id} says balance {balance_after}, "
            f"{walk.balance} + {amount} = {walk.balance + amount}"
        )
    return None


def _check_posting(walk: _Walk, row: Any, report: VerifyReport) -> None:
    (account_id, posting_id, transaction_bytes, seq, amount, balance_after, prev_hash, digest,
     counterparty) = row  # fmt: skip
    transaction_id = uuid.UUID(bytes=bytes(transaction_bytes))
    opening = walk.seq == -1
    if opening:
        # An open walk's first posting: where it starts, checked when the walks are joined.
        walk.seq, walk.balance, walk.head = seq - 1, balance_after - amount, prev_hash
    problem = _link_problem(walk, posting_id, seq, amount, balance_after, prev_hash)
    if problem is None and (
        counterparty is None
        or digest
        != posting_hash(
            account_id, seq, transaction_id, amount, balance_after, prev_hash, counterparty
        )
    ):
        problem = f"posting {posting_id} does not hash to its recorded hash"
    if seq > walk.account[4] and walk.beyond_head is None:
        walk.beyond_head = posting_id
    if opening:
        # Named, if at all, when the walks are joined: a posting that does not follow on is
        # named for that alone, as a single walk would.
        walk.first = (*row, problem)
    elif problem:
        report.add(
            Fault("chain", problem, account_id=account_id, posting_id=posting_id, seq=seq,
                  transaction_id=transaction_id)
        )  # fmt: skip
    # Carry on from what the row says, so one bad row is named once, not at every row after.
    walk.balance, walk.seq, walk.head = balance_after, seq, digest


async def verify_ledger(session: AsyncSession, *, split_at: int | None = None) -> VerifyReport:
    """Walk every account's chain in sequence order, then check each transaction's zero-sum.

    On PostgreSQL, when the session's transaction has written nothing (so another connection
    sees all it sees), verify reads on connections of its own: the walk in one REPEATABLE READ
    snapshot, which it exports, and the set-based checks (zero-sum, ledgers, holds) at the same
    time on a second connection that imports it, so PostgreSQL aggregates while Python hashes,
    and a ledger written to meanwhile is read as of one instant (a posting committed between
    reading the account heads and reading the postings would otherwise look like one past its
    account's head). A ledger of more than :data:`SPLIT_ABOVE` postings is walked in two
    halves by id, the second by a process of its own in the same snapshot (the walk is bound by
    Python's one core); ``split_at`` sets where the second half starts. Otherwise everything
    runs in the session, in turn."""
    connection = await session.connection()
    if await can_read_apart(connection):
        return await _verify_in_snapshot(connection.engine, split_at)
    report = VerifyReport()
    walks = {row[0]: _Walk(row) for row in await _accounts(connection)}
    report.accounts = len(walks)
    await _walk(connection, report, walks)
    for walk in walks.values():
        _close(walk, report)
    await _set_checks(connection, report)
    report.faults.sort(key=_fault_order)
    return report


SPLIT_ABOVE = 500_000
"""Postings (as told by the span of their ids) beyond which verify walks in two processes:
below it, starting the second costs about as much as it saves."""


async def _verify_in_snapshot(engine: AsyncEngine, split_at: int | None) -> VerifyReport:
    report = VerifyReport()
    async with engine.connect() as walking, engine.connect() as checking:
        walking = await walking.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        checking = await checking.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with walking.begin(), checking.begin():
            snapshot = await walking.scalar(text("SELECT pg_export_snapshot()"))
            # SET TRANSACTION SNAPSHOT takes no parameters; the id is PostgreSQL's own.
            if not (isinstance(snapshot, str) and _SNAPSHOT_ID.fullmatch(snapshot)):
                raise RuntimeError(f"unexpected snapshot id from pg_export_snapshot: {snapshot!r}")
            await checking.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            checked = VerifyReport()
            checks = asyncio.ensure_future(_set_checks(checking, checked))
            second: asyncio.Future[dict[str, Any]] | None = None
            pending: list[asyncio.Future[Any]] = [checks]
            try:
                if split_at is None:
                    ids = select(func.min(posting_t.c.id), func.max(posting_t.c.id))
                    low, high = (await walking.execute(ids)).one()
                    if low is not None and high - low > SPLIT_ABOVE:
                        split_at = (low + high + 1) // 2
                if split_at is not None:
                    url = engine.url.render_as_string(hide_password=False)
                    second = asyncio.ensure_future(_walk_in_child(url, snapshot, split_at))
                    pending.append(second)
                walks = {row[0]: _Walk(row) for row in await _accounts(walking)}
                report.accounts = len(walks)
                await _walk(walking, report, walks, below=split_at)
                await asyncio.gather(*pending)
            except BaseException:
                # The walk failed or was cancelled: stop the rest too, and let the walk's error be
                # the one that surfaces.
                for task in pending:
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*pending)
                raise
    if second is not None:
        _join(walks, second.result(), report)
    for walk in walks.values():
        _close(walk, report)
    for fault in checked.faults:
        report.add(fault)
    report.faults.sort(key=_fault_order)
    return report


async def _accounts(connection: AsyncConnection) -> Sequence[Any]:
    return (
        await connection.execute(
            select(
                account_t.c.id,
                account_t.c.ledger,
                account_t.c.kind,
                account_t.c.balance,
                account_t.c.seq,
                account_t.c.head_hash,
            ).order_by(account_t.c.id)
        )
    ).all()


async def _walk(
    connection: AsyncConnection,
    report: VerifyReport,
    walks: dict[int, _Walk],
    *,
    below: int | None = None,
    from_id: int | None = None,
) -> None:
    """The chains of postings with ids in ``[from_id, below)``, posting by posting (the chain,
    seq, balance and hash checks), carrying ``walks`` on.

    One function for the loop that is the whole cost of verify: a posting that checks out is
    handled inline, with local names and no call; anything else goes to ``_check_posting``."""
    # The transaction id as its 16 bytes, which is what is hashed: on PostgreSQL straight from
    # the server (decoding a UUID object per row only to take its bytes cost a tenth of the
    # walk); SQLite's rows (UUIDs) are converted below. The posting's ledger is checked against
    # its account's by the set checks, in SQL.
    as_bytes = uuid_bytes(connection, posting_t.c.transaction_id)
    convert = as_bytes is posting_t.c.transaction_id  # the server sends UUIDs, not their bytes
    postings = select(
        posting_t.c.account_id,
        posting_t.c.id,
        as_bytes,
        posting_t.c.seq,
        posting_t.c.amount,
        posting_t.c.balance_after,
        posting_t.c.prev_hash,
        posting_t.c.hash,
        posting_t.c.counterparty_account_id,
    ).order_by(posting_t.c.id)
    if below is not None:
        postings = postings.where(posting_t.c.id < below)
    if from_id is not None:
        postings = postings.where(posting_t.c.id >= from_id)

    # Postings come in id order, which is every account's seq order (the engine inserts an
    # account's next posting only once the one before committed, and ids come from one sequence
    # without a per-session cache), so each account's chain is walked in order while the
    # accounts interleave. Reading by id follows the table as it was written; reading by
    # (account, seq) would jump around it, or sort it.
    # The loop below is the whole cost of verify (a few microseconds a posting, in Python), so a
    # posting that checks out is handled inline with local names; anything else goes to
    # ``_check_posting``, which names the fault.
    sha256, pack, prefix = hashlib.sha256, POSTING_LAYOUT.pack, POSTING_PREFIX
    async with contextlib.aclosing(chunks(connection, postings, _CHUNK)) as read:
        async for rows in read:
            report.postings += len(rows)
            chunk = [(r[0], r[1], r[2].bytes, *r[3:]) for r in rows] if convert else rows
            for row in chunk:
                (account_id, posting_id, transaction_id, seq, amount, balance_after, prev_hash,
                 digest, counterparty) = row  # fmt: skip
                walk = walks.get(account_id)
                if walk is None:
                    report.add(
                        Fault(
                            "orphan", f"posting {posting_id} has no account", account_id, posting_id
                        )
                    )
                elif (
                    seq == walk.seq + 1
                    and seq <= walk.account[4]
                    and prev_hash == walk.head
                    and balance_after == walk.balance + amount
                    and counterparty is not None
                    and digest
                    == sha256(
                        pack(prefix, account_id, seq, transaction_id, amount, balance_after,
                             prev_hash, counterparty)
                    ).digest()
                ):  # fmt: skip
                    walk.balance, walk.seq, walk.head = balance_after, seq, digest
                else:
                    _check_posting(walk, row, report)


# --------------------------------------------------------------------------- the second half


async def _walk_in_child(url: str, snapshot: str, from_id: int) -> dict[str, Any]:
    """Walk the postings from ``from_id`` on in a process of its own (``python -m
    exchange.ledger.verify``), in the exported ``snapshot``; its findings as :func:`_walk_part`
    gives them. The database address goes through the child's standard input, not its command
    line, which other users of the machine can read."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange.ledger.verify",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job = json.dumps({"url": url, "snapshot": snapshot, "from_id": from_id}).encode()
        out, err = await child.communicate(job)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"verify's second walk failed: {err.decode(errors='replace')[-2000:]}")
    found: dict[str, Any] = json.loads(out)
    return found


async def _walk_part(url: str, snapshot: str, from_id: int) -> dict[str, Any]:
    """The child's side: every account's walk from its first posting at or after ``from_id``
    (where it starts is taken from that posting, and checked by the parent), in ``snapshot``."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    engine = create_async_engine(url, poolclass=NullPool)
    report = VerifyReport()
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with connection.begin():
                await connection.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
                walks = {row[0]: _Walk(row, open=True) for row in await _accounts(connection)}
                await _walk(connection, report, walks, from_id=from_id)
    finally:
        await engine.dispose()
    return {
        "postings": report.postings,
        "faults": [fault.as_dict() for fault in report.faults],
        "walks": {
            str(account_id): {
                "first": [v.hex() if isinstance(v, bytes) else v for v in walk.first],
                "balance": walk.balance,
                "seq": walk.seq,
                "head": walk.head.hex(),
                "beyond_head": walk.beyond_head,
            }
            for account_id, walk in walks.items()
            if walk.first is not None
        },
    }


def _join(walks: dict[int, _Walk], found: dict[str, Any], report: VerifyReport) -> None:
    """Carry ``walks`` (the first half's) on with what the second half found: each account's
    first posting there must follow on from where the first half left it."""
    report.postings += found["postings"]
    for fault in found["faults"]:
        if fault["transaction_id"] is not None:
            fault["transaction_id"] = uuid.UUID(fault["transaction_id"])
        report.add(Fault(**fault))
    for account_id, theirs in found["walks"].items():
        walk = walks.get(int(account_id))
        if walk is None:  # the child's account rows are the same snapshot's
            raise RuntimeError(f"the second walk found account {account_id}, the first did not")
        (_, posting_id, transaction_hex, seq, amount, balance_after, prev_hex, _, _,
         unhashed) = theirs["first"]  # fmt: skip
        previous = bytes.fromhex(prev_hex)
        problem = _link_problem(walk, posting_id, seq, amount, balance_after, previous) or unhashed
        if problem is not None:
            report.add(
                Fault("chain", problem, account_id=walk.account[0], posting_id=posting_id,
                      seq=seq, transaction_id=uuid.UUID(hex=transaction_hex))
            )  # fmt: skip
        if walk.beyond_head is None:
            walk.beyond_head = theirs["beyond_head"]
        walk.balance, walk.seq = theirs["balance"], theirs["seq"]
        walk.head = bytes.fromhex(theirs["head"])


def _child_main() -> None:
    job = json.loads(sys.stdin.read())
    found = asyncio.run(_walk_part(job["url"], job["snapshot"], job["from_id"]))
    sys.stdout.write(json.dumps(found))


async def _set_checks(connection: AsyncConnection, report: VerifyReport) -> None:
    """What one aggregate each finds: transactions that do not sum to zero per ledger, postings
    on another ledger than their account's (the hash does not cover the ledger), and accounts
    whose ``held`` is not the sum of their active holds; then the lots
    (``exchange.ledger.lot_checks``)."""
    # The zero-sum aggregate hashes every transaction: memory for that, not a spill.
    await aggregate_in_memory(connection)
    unbalanced = await connection.execute(
        select(posting_t.c.transaction_id, posting_t.c.ledger, func.sum(posting_t.c.amount),
               func.min(posting_t.c.id))
        .group_by(posting_t.c.transaction_id, posting_t.c.ledger)
        .having(func.sum(posting_t.c.amount) != 0)
        .order_by(func.min(posting_t.c.id))
    )  # fmt: skip
    for transaction_id, ledger, total, first_posting in unbalanced:
        report.add(
            Fault("zero-sum", f"transaction {transaction_id} sums to {total} on ledger {ledger}",
                  posting_id=first_posting, transaction_id=transaction_id)
        )  # fmt: skip

    # Per account, the ledgers its postings are on (a few rows, however many postings), then
    # compared with the account's own.
    ledgers = (
        select(posting_t.c.account_id, posting_t.c.ledger, func.min(posting_t.c.id).label("first"))
        .group_by(posting_t.c.account_id, posting_t.c.ledger)
        .subquery()
    )
    elsewhere = await connection.execute(
        select(ledgers.c.first, ledgers.c.account_id, ledgers.c.ledger, account_t.c.ledger)
        .join(account_t, account_t.c.id == ledgers.c.account_id)
        .where(ledgers.c.ledger != account_t.c.ledger)
        .order_by(ledgers.c.first)
    )
    for posting_id, account_id, ledger, account_ledger in elsewhere:
        report.add(
            Fault("chain", f"posting {posting_id} is on ledger {ledger}, its account on"
                  f" {account_ledger}", account_id=account_id, posting_id=posting_id)
        )  # fmt: skip

    active = func.coalesce(func.sum(hold_t.c.points), 0)
    held = await connection.execute(
        select(account_t.c.id, account_t.c.held, active)
        .select_from(account_t.outerjoin(
            hold_t, and_(hold_t.c.account_id == account_t.c.id, hold_t.c.status == "active")))
        .where(account_t.c.kind == "member")
        .group_by(account_t.c.id, account_t.c.held)
        .having(account_t.c.held != active)
    )  # fmt: skip
    for account_id, recorded, total in held:
        report.add(
            Fault("held", f"account {account_id} holds {recorded}, its active holds {total}",
                  account_id=account_id)
        )  # fmt: skip
    async for detail, account_id in lot_faults(connection):
        report.add(Fault("lots", detail, account_id=account_id))


def _fault_order(fault: Fault) -> tuple[int, int]:
    """Chain faults first, in posting order: the first fault names the first bad posting."""
    rank = {"chain": 0, "orphan": 0, "account-head": 1, "zero-sum": 2}.get(fault.kind, 3)
    return (rank, fault.posting_id or 0)


if __name__ == "__main__":
    _child_main()
