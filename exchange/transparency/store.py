"""The log in the database: its size, appending leaves, reading the nodes of a proof.

The size is the number of ``log_entry`` rows (its last index plus one, one index probe). A proof
names its complete nodes (``exchange.transparency.tree``), those name their tiles, and the tiles
come in one query: at ten million leaves, an inclusion proof reads at most two tiles per level,
three levels deep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    SmallInteger,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import insert_columns, is_postgresql
from exchange.transparency import tree
from exchange.transparency.models import LogEntry, LogTile
from exchange.transparency.tiles import TileKey, append_tiles, edge_tiles, node_from_tile, tile_of

entry_t = cast(Table, LogEntry.__table__)
tile_t = cast(Table, LogTile.__table__)


class NotInLog(LookupError):
    """The transaction has no place in the log yet (or not within the asked size)."""


async def log_size(session: AsyncSession) -> int:
    last = await session.scalar(select(func.max(entry_t.c.idx)))
    return 0 if last is None else int(last) + 1


_TILES_BY_ARRAYS = text(
    "SELECT t.level, t.idx, t.hashes FROM log_tile AS t"
    " JOIN unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) AS k(level, idx)"
    " ON t.level = k.level AND t.idx = k.idx"
).columns(level=SmallInteger, idx=BigInteger, hashes=LargeBinary)
"""On PostgreSQL one statement text however many tiles a proof needs (prepared once per
connection); an ``IN`` list would be a new statement for every count."""


async def read_tiles(session: AsyncSession, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    if is_postgresql(session):
        rows = await session.execute(
            _TILES_BY_ARRAYS,
            {"levels": [level for level, _ in wanted], "idxs": [index for _, index in wanted]},
        )
    else:
        rows = await session.execute(
            select(tile_t.c.level, tile_t.c.idx, tile_t.c.hashes).where(
                tuple_(tile_t.c.level, tile_t.c.idx).in_(wanted)
            )
        )
    return {(row.level, row.idx): bytes(row.hashes) for row in rows}


async def append_leaves(
    session: AsyncSession, size: int, transaction_ids: Sequence[uuid.UUID], leaves: Sequence[bytes]
) -> int:
    """Write entries ``size`` onwards and the tiles they change; returns the new size. The caller
    holds the sequencer lock, so ``size`` is the log's."""
    if not leaves:
        return size
    edges = edge_tiles(size)
    current = await read_tiles(session, ((level, index) for level, (index, _) in edges.items()))
    written = append_tiles(
        size, {level: current[(level, index)] for level, (index, _) in edges.items()}, leaves
    )
    await insert_columns(
        session,
        entry_t,
        {
            "idx": list(range(size, size + len(leaves))),
            "transaction_id": list(transaction_ids),
            "leaf_hash": list(leaves),
        },
        {},
    )
    rewritten = [key for key in written if key in current]
    if rewritten:
        await session.execute(
            delete(tile_t).where(tuple_(tile_t.c.level, tile_t.c.idx).in_(rewritten))
        )
    await session.execute(
        insert(tile_t),
        [
            {"level": level, "idx": index, "hashes": data}
            for (level, index), data in written.items()
        ],
    )
    return size + len(leaves)


async def read_nodes(session: AsyncSession, ranges: Sequence[tree.Range]) -> dict[tree.Node, bytes]:
    nodes = tree.nodes_for(ranges)
    tiles = await read_tiles(session, (tile_of(node)[0] for node in nodes))
    return {node: node_from_tile(node, tiles) for node in nodes}


async def root_at(session: AsyncSession, size: int) -> bytes:
    """The root hash of the log's first ``size`` entries."""
    nodes = await read_nodes(session, [(0, size)])
    return tree.range_hash(0, size, nodes)


async def entry_of(session: AsyncSession, transaction_id: uuid.UUID) -> Any:
    row = (
        await session.execute(
            select(entry_t.c.idx, entry_t.c.leaf_hash).where(
                entry_t.c.transaction_id == transaction_id
            )
        )
    ).first()
    if row is None:
        raise NotInLog(str(transaction_id))
    return row


async def inclusion_proof(session: AsyncSession, index: int, size: int) -> list[bytes]:
    plan = tree.inclusion_plan(index, size)
    return tree.fold(plan, await read_nodes(session, plan))


async def consistency_proof(session: AsyncSession, old: int, new: int) -> list[bytes]:
    plan = tree.consistency_plan(old, new)
    return tree.fold(plan, await read_nodes(session, plan))
