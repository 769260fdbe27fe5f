"""RFC 9162 section 2.1 Merkle tree hashing and proofs, over any source of complete subtrees.

A node is ``(level, index)``: the hash of leaves ``[index * 2**level, (index + 1) * 2**level)``.
Only complete nodes are ever stored (they never change once the log has their leaves); the
hash of any other range, such as the right edge of a tree whose size is not a power of two, is
folded from the complete nodes that tile it. Proof building is two passes: :func:`inclusion_plan`
and :func:`consistency_plan` name the ranges a proof is made of, :func:`complete_nodes` the
stored nodes those need, and :func:`range_hash` folds them, so that storage can fetch every
node of a proof in one read (see ``exchange.transparency.store``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

Node = tuple[int, int]
"""``(level, index)`` of a complete subtree."""
Range = tuple[int, int]
"""Leaves ``[start, end)``."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1), where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def complete_nodes(start: int, end: int) -> list[Node]:
    """The complete nodes that tile ``[start, end)``, left to right, in the shape RFC 9162's
    MTH gives a range whose start is a multiple of its first split (every range a proof uses)."""
    nodes: list[Node] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # The largest aligned power-of-two block that starts here and fits.
        while start % (1 << level):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def range_hash(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH of leaves ``[start, end)`` from the complete nodes that tile it (right fold: RFC
    9162 puts the larger, complete subtree on the left at every split)."""
    if start == end:
        return EMPTY_ROOT
    parts = [nodes[node] for node in complete_nodes(start, end)]
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def inclusion_plan(index: int, size: int) -> list[Range]:
    """The ranges whose hashes make the inclusion proof of leaf ``index`` in a tree of ``size``
    (RFC 9162 2.1.3.1 PATH), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_plan(old: int, new: int) -> list[Range]:
    """The ranges whose hashes make the consistency proof from ``old`` to ``new`` (RFC 9162
    2.1.4.1 PROOF / SUBPROOF), in the order the RFC lists them."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    ranges: list[Range] = []
    start, end, whole = 0, new, True
    while True:
        size = end - start
        m = old - start
        if m == size:
            if not whole:
                ranges.append((start, end))
            break
        k = _split(size)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            whole = False
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    """Every complete node the given ranges fold from."""
    needed: set[Node] = set()
    for start, end in ranges:
        needed.update(complete_nodes(start, end))
    return needed


def fold(ranges: Sequence[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The hashes of ``ranges``: a proof, once its nodes are fetched."""
    return [range_hash(start, end, nodes) for start, end in ranges]


def nodes_of_leaves(leaves: Sequence[bytes]) -> dict[Node, bytes]:
    """Every complete node of a tree of leaf hashes, in memory (tests and small trees)."""
    nodes: dict[Node, bytes] = {(0, i): h for i, h in enumerate(leaves)}
    level, row = 0, list(leaves)
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
        nodes.update({(level, i): h for i, h in enumerate(row)})
    return nodes
