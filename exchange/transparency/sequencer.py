"""The sequencer: the one writer that gives committed transactions their places in the log.

It runs after commit, apart from the posting path (which writes nothing for the log): in the
background every second, and on demand before a checkpoint. A PostgreSQL advisory lock, the
pattern settlement uses, lets exactly one replica append at a time; on SQLite the database's
write lock does the same. Each run takes the transactions not yet logged in the order of their
time-ordered ids (UUIDv7), starting ``EXCHANGE_LOG_LATE_SECONDS`` before the newest one logged:
a transaction that commits late (its id older than entries already logged) gets the next free
index, as a late posting falls into the next settlement batch. Indexes never move once given.

The leaf of a transaction (its encoding is in the README, "What a partner can prove"):
``"transaction/v1\\x00" || id (16 bytes) || len(kind) (1 byte) || kind (ASCII) ||
number of postings (4 bytes, big-endian) || each posting's hash (32 bytes)``, postings ordered
by account id then seq; the tree hashes it as ``SHA-256(0x00 || leaf)`` (RFC 9162 2.1.1).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import one_of, take_settlement_lock
from exchange.ledger.models import LedgerTransaction, Posting
from exchange.transparency.models import LogEntry
from exchange.transparency.store import append_leaves, entry_t, log_size
from exchange.transparency.tree import leaf_hash

LOG_LOCK_ID = 7_420_017
"""The advisory lock of the log's single writer (settlement's is 7 420 004)."""
LEAF_PREFIX = b"transaction/v1\x00"
RUN_LIMIT = 20_000
"""Transactions logged per statement round; a run loops until none is left."""

transaction_t = cast(Table, LedgerTransaction.__table__)
posting_t = cast(Table, Posting.__table__)


def transaction_leaf(
    transaction_id: uuid.UUID, kind: str, posting_hashes: Sequence[bytes]
) -> bytes:
    """The bytes a transaction's leaf hashes (see the module's note)."""
    encoded = kind.encode("ascii")
    return b"".join(
        [LEAF_PREFIX, transaction_id.bytes, bytes([len(encoded)]), encoded,
         len(posting_hashes).to_bytes(4, "big"), *posting_hashes]
    )  # fmt: skip


def late_floor(newest: uuid.UUID, late_seconds: int) -> uuid.UUID:
    """The smallest UUIDv7 made ``late_seconds`` before ``newest`` was."""
    millis = max(0, (newest.int >> 80) - late_seconds * 1000)
    return uuid.UUID(int=millis << 80)


async def _unlogged(
    session: AsyncSession, size: int, late_seconds: int
) -> list[tuple[uuid.UUID, str]]:
    query = (
        select(transaction_t.c.id, transaction_t.c.kind)
        .where(~exists().where(entry_t.c.transaction_id == transaction_t.c.id))
        .order_by(transaction_t.c.id)
        .limit(RUN_LIMIT)
    )
    if size:
        newest = await session.scalar(
            select(LogEntry.transaction_id).where(LogEntry.idx == size - 1)
        )
        assert newest is not None
        query = query.where(transaction_t.c.id >= late_floor(newest, late_seconds))
    return [(row.id, row.kind) for row in await session.execute(query)]


async def posting_hashes_of(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[bytes]]:
    """Each transaction's posting hashes, in leaf order (account id, then seq)."""
    rows = await session.execute(
        select(posting_t.c.transaction_id, posting_t.c.hash)
        .where(one_of(session, posting_t.c.transaction_id, ids))
        .order_by(posting_t.c.transaction_id, posting_t.c.account_id, posting_t.c.seq)
    )
    hashes: dict[uuid.UUID, list[bytes]] = defaultdict(list)
    for row in rows:
        hashes[row.transaction_id].append(bytes(row.hash))
    return hashes


async def extend_log(session: AsyncSession, late_seconds: int, *, wait: bool = True) -> int | None:
    """Log every committed transaction not yet logged; the new size, or ``None`` when another
    replica holds the sequencer lock (``wait=False``). Runs in the caller's transaction."""
    if not await take_settlement_lock(session, LOG_LOCK_ID, wait=wait):
        return None
    size = await log_size(session)
    while batch := await _unlogged(session, size, late_seconds):
        ids = [transaction_id for transaction_id, _ in batch]
        hashes = await posting_hashes_of(session, ids)
        leaves = [
            leaf_hash(transaction_leaf(transaction_id, kind, hashes.get(transaction_id, [])))
            for transaction_id, kind in batch
        ]
        size = await append_leaves(session, size, ids, leaves)
        if len(batch) < RUN_LIMIT:
            break
    return size
