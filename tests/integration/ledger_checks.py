"""What the ledger tests check against the database itself, written without the code under test
where that is possible: the hash encoding is spelled out here, so a change to it breaks a test."""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.ledger.chain import GENESIS_HASH, posting_hash
from exchange.ledger.models import Account, Hold, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger

account_t = Account.__table__
posting_t = Posting.__table__
hold_t = Hold.__table__

ZERO_HASH = b"\x00" * 32


def expected_hash(
    account_id: int,
    seq: int,
    transaction_id: uuid.UUID,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
    counterparty: int,
) -> bytes:
    """SHA-256 of ``posting/v2\\0``, account id and seq (big-endian int64), the transaction's 16
    UUID bytes, amount and balance after (big-endian int64), the previous hash, then the
    counterparty account (int64)."""
    body = (
        account_id.to_bytes(8, "big", signed=True)
        + seq.to_bytes(8, "big", signed=True)
        + transaction_id.bytes
        + struct.pack(">q", amount)
        + struct.pack(">q", balance_after)
        + prev_hash
    )
    return hashlib.sha256(b"posting/v2\x00" + body + struct.pack(">q", counterparty)).digest()


@dataclass(frozen=True, order=True)
class Line:
    """A posting as an accountant writes it: account, seq, amount, balance after."""

    account_id: int
    seq: int
    amount: int
    balance_after: int


async def lines_of(session: AsyncSession, transaction_id: uuid.UUID) -> list[Line]:
    """The postings of one transaction, by account."""
    rows = await session.execute(
        select(
            posting_t.c.account_id, posting_t.c.seq, posting_t.c.amount, posting_t.c.balance_after
        )
        .where(posting_t.c.transaction_id == transaction_id)
        .order_by(posting_t.c.account_id)
    )
    return [Line(*row) for row in rows]


async def assert_chained(session: AsyncSession) -> int:
    """Every account's postings run seq 1, 2, ... with each ``prev_hash`` the hash before it
    (the first: 32 zero bytes), each hash recomputed, balances running on, and the account row
    holding the last of them as its head. Returns how many postings were walked."""
    assert GENESIS_HASH == ZERO_HASH
    accounts = (
        await session.execute(text("SELECT id, balance, seq, head_hash FROM account ORDER BY id"))
    ).all()
    walked = 0
    for account_id, head_balance, head_seq, head_hash in accounts:
        postings = (
            await session.execute(
                select(
                    posting_t.c.seq,
                    posting_t.c.transaction_id,
                    posting_t.c.amount,
                    posting_t.c.balance_after,
                    posting_t.c.prev_hash,
                    posting_t.c.hash,
                    posting_t.c.counterparty_account_id,
                )
                .where(posting_t.c.account_id == account_id)
                .order_by(posting_t.c.seq)
            )
        ).all()
        balance, previous = 0, ZERO_HASH
        for number, row in enumerate(postings, start=1):
            seq, transaction_id, amount, balance_after, prev_hash, digest, counterparty = row
            assert seq == number, (account_id, seq)
            assert bytes(prev_hash) == previous, (account_id, seq)
            assert balance_after == balance + amount, (account_id, seq)
            recomputed = expected_hash(
                account_id, seq, transaction_id, amount, balance_after, previous, counterparty
            )
            assert bytes(digest) == recomputed, (account_id, seq)
            assert (
                posting_hash(
                    account_id, seq, transaction_id, amount, balance_after, previous, counterparty
                )
                == recomputed
            )
            balance, previous = balance_after, recomputed
            walked += 1
        assert (head_balance, head_seq, bytes(head_hash)) == (balance, len(postings), previous), (
            account_id
        )
    return walked


async def account_row(session: AsyncSession, account_id: int) -> tuple[int, int, int]:
    """(balance, held, seq) as the account row says."""
    row = (
        await session.execute(
            text("SELECT balance, held, seq FROM account WHERE id = :a"), {"a": account_id}
        )
    ).one()
    return row[0], row[1], row[2]


async def _pool_total(session: AsyncSession, partner: PartnerInfo, kind: str) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(account_t.c.balance), 0)).where(
            account_t.c.partner_id == partner.id, account_t.c.kind == kind
        )
    )
    return int(total or 0)


async def issuance_total(session: AsyncSession, partner: PartnerInfo) -> int:
    """The sum of the brand's issuance shards."""
    return await _pool_total(session, partner, "issuance")


async def members_total(session: AsyncSession, partner: PartnerInfo) -> int:
    """The sum of the brand's member accounts: the points outstanding."""
    return await _pool_total(session, partner, "member")


async def assert_outstanding(session: AsyncSession, partner: PartnerInfo, points: int) -> None:
    """The members hold ``points`` between them and the issuance shards are exactly minus that."""
    assert await members_total(session, partner) == points
    assert await issuance_total(session, partner) == -points


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    accounts: list[tuple[Any, ...]]
    holds: list[tuple[Any, ...]]


async def snapshot(session: AsyncSession) -> Snapshot:
    """Row counts of the ledger's tables, every account's head, every hold's state."""
    counts = {
        table: int(await session.scalar(text(f"SELECT COUNT(*) FROM {table}")) or 0)
        for table in ("posting", "ledger_transaction", "hold", "member", "account")
    }
    accounts = [
        tuple(row)
        for row in await session.execute(
            text("SELECT id, balance, held, seq, head_hash FROM account ORDER BY id")
        )
    ]
    holds = [
        tuple(row)
        for row in await session.execute(
            text("SELECT id, status, captured, closed_at FROM hold ORDER BY id")
        )
    ]
    return Snapshot(counts, accounts, holds)


async def assert_ledger_whole(session: AsyncSession) -> None:
    """What must hold after any operation, successful or refused."""
    by_ledger = (
        await session.execute(
            text("SELECT ledger, SUM(amount) FROM posting GROUP BY ledger HAVING SUM(amount) <> 0")
        )
    ).all()
    assert by_ledger == [], by_ledger
    balances = (
        await session.execute(
            text(
                "SELECT ledger, SUM(balance) FROM account GROUP BY ledger HAVING SUM(balance) <> 0"
            )
        )
    ).all()
    assert balances == [], balances
    per_transaction = (
        await session.execute(
            text(
                "SELECT transaction_id, ledger FROM posting GROUP BY transaction_id, ledger"
                " HAVING SUM(amount) <> 0"
            )
        )
    ).all()
    assert per_transaction == [], per_transaction
    negative = (
        await session.execute(
            text(
                "SELECT id, balance, held FROM account"
                " WHERE kind = 'member' AND (balance < 0 OR held < 0 OR balance - held < 0)"
            )
        )
    ).all()
    assert negative == [], negative
    held: dict[int, int] = defaultdict(int)
    for account_id, points in await session.execute(
        text("SELECT account_id, points FROM hold WHERE status = 'active'")
    ):
        held[account_id] += points
    recorded = {
        account_id: value
        for account_id, value in await session.execute(
            text("SELECT id, held FROM account WHERE kind = 'member'")
        )
        if value
    }
    assert recorded == dict(held)
    report = await verify_ledger(session)
    assert report.ok, report.as_dict()
