"""``litestar ledger verify``'s check of the log: every transaction in it once, in order, each
leaf what its transaction and postings give, every stored tile and checkpoint root recomputed.

One pass over the entries in index order keeps the tree's compact range (the roots of its
complete subtrees, left to right): the root at any size is their right fold, so each stored
checkpoint is checked as the pass goes by its size, and each full tile as it is completed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.transparency.checkpoints import checkpoint_body, checkpoint_t
from exchange.transparency.sequencer import (
    late_floor,
    posting_hashes_of,
    transaction_leaf,
    transaction_t,
)
from exchange.transparency.store import entry_t, read_tiles
from exchange.transparency.tiles import TILE_WIDTH, subtree_root
from exchange.transparency.tree import EMPTY_ROOT, leaf_hash, node_hash

CHUNK = 10_000
MAX_FAULTS = 20


@dataclass
class LogReport:
    entries: int = 0
    checkpoints: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def add(self, kind: str, detail: str, **facts: Any) -> None:
        if len(self.faults) < MAX_FAULTS:
            self.faults.append({"kind": kind, "detail": detail, **facts})

    def as_dict(self) -> dict[str, Any]:
        first = self.faults[0] if self.faults else None
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "first_fault": first,
            "faults": self.faults,
        }


class CompactRange:
    """The roots of the complete subtrees of a growing tree, as ``(height, hash)``."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []

    def push(self, leaf: bytes) -> None:
        height, value = 0, leaf
        while self.stack and self.stack[-1][0] == height:
            value = node_hash(self.stack.pop()[1], value)
            height += 1
        self.stack.append((height, value))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        value = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            value = node_hash(left, value)
        return value


async def verify_log(session: AsyncSession, origin: str, late_seconds: int) -> LogReport:
    report = LogReport()
    checkpoints = {
        row.size: (bytes(row.root_hash), row.note)
        for row in await session.execute(
            select(checkpoint_t.c.size, checkpoint_t.c.root_hash, checkpoint_t.c.note)
        )
    }
    report.checkpoints = len(checkpoints)
    tree, start = CompactRange(), 0
    while True:
        rows = (
            await session.execute(
                select(
                    entry_t.c.idx,
                    entry_t.c.transaction_id,
                    entry_t.c.leaf_hash,
                    transaction_t.c.kind,
                )
                .outerjoin(transaction_t, transaction_t.c.id == entry_t.c.transaction_id)
                .where(entry_t.c.idx >= start)
                .order_by(entry_t.c.idx)
                .limit(CHUNK)
            )
        ).all()
        if not rows:
            break
        await _check_chunk(session, origin, rows, start, tree, checkpoints, report)
        start += len(rows)
    report.entries = start
    for size in checkpoints:
        if size > start:
            report.add(
                "checkpoint-beyond-log", f"checkpoint of size {size} beyond the log", size=size
            )
    await _check_unlogged(session, start, late_seconds, report)
    return report


async def _check_chunk(
    session: AsyncSession, origin: str, rows: Sequence[Any], start: int, tree: CompactRange,
    checkpoints: dict[int, tuple[bytes, str]], report: LogReport,
) -> None:  # fmt: skip
    hashes = await posting_hashes_of(session, [row.transaction_id for row in rows])
    leaves = []
    for offset, row in enumerate(rows):
        index = start + offset
        if row.idx != index:
            report.add("entry-missing", f"entry {index} is missing", index=index)
            return
        if row.kind is None:
            report.add("entry-without-transaction", f"entry {index}", index=index)
            continue
        leaf = leaf_hash(
            transaction_leaf(row.transaction_id, row.kind, hashes.get(row.transaction_id, []))
        )
        if leaf != bytes(row.leaf_hash):
            report.add("leaf-changed", f"entry {index} is not its transaction", index=index,
                       transaction_id=str(row.transaction_id))  # fmt: skip
        leaves.append(leaf)
        tree.push(leaf)
        size = index + 1
        if size in checkpoints:
            root, note = checkpoints[size]
            if tree.root() != root:
                report.add("checkpoint-root", f"checkpoint {size} has another root", size=size)
            elif not note.startswith(checkpoint_body(origin, size, root) + "\n"):
                report.add("checkpoint-note", f"checkpoint {size}'s note says otherwise", size=size)
    await _check_tiles(session, start, leaves, report)


async def _check_tiles(
    session: AsyncSession, start: int, leaves: list[bytes], report: LogReport
) -> None:
    """The level-0 tiles of this stretch hold its leaf hashes; each full one's root is the
    entry the level above holds for it."""
    first, last = start // TILE_WIDTH, (start + len(leaves) - 1) // TILE_WIDTH
    tiles = await read_tiles(session, [(0, i) for i in range(first, last + 1)])
    uppers = await read_tiles(session, [(1, i // TILE_WIDTH) for i in range(first, last + 1)])
    for i in range(first, last + 1):
        stored = tiles.get((0, i), b"")
        lo = max(i * TILE_WIDTH, start) - start
        hi = min((i + 1) * TILE_WIDTH, start + len(leaves)) - start
        offset = (lo + start - i * TILE_WIDTH) * 32
        if stored[offset : offset + (hi - lo) * 32] != b"".join(leaves[lo:hi]):
            report.add("tile-changed", f"tile 0/{i} does not hold the log's leaves", tile=i)
        elif len(stored) == TILE_WIDTH * 32:
            upper = uppers.get((1, i // TILE_WIDTH), b"")
            at = (i % TILE_WIDTH) * 32
            root = subtree_root([stored[k : k + 32] for k in range(0, len(stored), 32)])
            if upper[at : at + 32] != root:
                report.add("tile-changed", f"tile 1/{i // TILE_WIDTH} misses tile 0/{i}", tile=i)


async def _check_unlogged(
    session: AsyncSession, size: int, late_seconds: int, report: LogReport
) -> None:
    """Every transaction is in the log, except those the sequencer has not reached yet."""
    query = (
        select(func.count())
        .select_from(transaction_t)
        .where(~exists().where(entry_t.c.transaction_id == transaction_t.c.id))
    )
    if size:
        newest = await session.scalar(
            select(entry_t.c.transaction_id).where(entry_t.c.idx == size - 1)
        )
        assert newest is not None
        query = query.where(transaction_t.c.id < late_floor(newest, late_seconds))
        missing = int(await session.scalar(query) or 0)
        if missing:
            report.add(
                "transaction-not-logged", f"{missing} transactions were never logged", count=missing
            )
