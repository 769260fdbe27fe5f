"""Appending to a tiled tree, in memory: which tiles change when leaves are added.

Tiles follow C2SP tlog-tiles: height 8, so a tile holds up to 256 hashes; level ``L`` holds the
hashes of the complete subtrees of height ``8 * L``. Appending ``k`` leaves to a tree of ``n``
touches the right-edge tile of each level and the new ones after it: the leaves are hashed once
and every full tile's subtree root is carried up, 255 node hashes per 256 leaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exchange.transparency.tree import Node, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
HASH_SIZE = 32

TileKey = tuple[int, int]
"""``(level, index)`` of a tile."""


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two run of hashes."""
    row = list(hashes)
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def edge_tiles(size: int) -> dict[int, TileKey]:
    """The partial tile at the right edge of each level of a tree of ``size``, with its width
    (the number of hashes it holds), as ``{level: (tile index, width)}``; full levels omitted."""
    edges: dict[int, TileKey] = {}
    level, count = 0, size
    while count:
        index, width = divmod(count, TILE_WIDTH)
        if width:
            edges[level] = (index, width)
        level, count = level + 1, count // TILE_WIDTH
    return edges


def append_tiles(
    size: int, edges: Mapping[int, bytes], leaves: Sequence[bytes]
) -> dict[TileKey, bytes]:
    """The tiles to write after appending leaf hashes ``leaves`` to a tree of ``size`` whose
    right-edge partial tiles hold ``edges`` (level to concatenated hashes)."""
    written: dict[TileKey, bytes] = {}
    level, count, new = 0, size, list(leaves)
    while new:
        index, width = divmod(count, TILE_WIDTH)
        pending = edges.get(level, b"")
        if len(pending) != width * HASH_SIZE:
            raise ValueError(f"tile {level}/{index} holds {len(pending)} bytes, not {width} hashes")
        run = [pending[i : i + HASH_SIZE] for i in range(0, len(pending), HASH_SIZE)] + new
        carried = []
        for start in range(0, len(run), TILE_WIDTH):
            chunk = run[start : start + TILE_WIDTH]
            written[(level, index + start // TILE_WIDTH)] = b"".join(chunk)
            if len(chunk) == TILE_WIDTH:
                carried.append(subtree_root(chunk))
        level, count, new = level + 1, count // TILE_WIDTH, carried
    return written


def tile_of(node: Node) -> tuple[TileKey, int, int]:
    """Where a complete node lives: its tile, the first entry of that tile it covers and how
    many entries (a power of two up to 128, or 1)."""
    height, index = node
    level, rise = divmod(height, TILE_HEIGHT)
    first = index << rise
    tile, offset = divmod(first, TILE_WIDTH)
    return (level, tile), offset, 1 << rise


def node_from_tile(node: Node, tiles: Mapping[TileKey, bytes]) -> bytes:
    """A complete node's hash, from the tile that holds its subtree's entries."""
    key, offset, count = tile_of(node)
    data = tiles[key]
    start, end = offset * HASH_SIZE, (offset + count) * HASH_SIZE
    if len(data) < end:
        raise KeyError(node)
    return subtree_root([data[i : i + HASH_SIZE] for i in range(start, end, HASH_SIZE)])
