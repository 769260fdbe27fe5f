"""RFC 9162 / RFC 6962 tree hashing and proofs against published vectors.

The vectors are those of transparency-dev/merkle (``testonly/constants.go``: leaf inputs, node
and root hashes; ``cmd/proofgen/main.go``: inclusion and consistency proofs), the same as
Trillian's and certificate-transparency-go's Merkle tests use. Their leaf indexes are 1-based
there; here they are 0-based. Both sides are checked: the exchange builds the proofs
(``exchange.transparency``) and the SDK verifies them (``partners.transparency``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.transparency import tree
from exchange.transparency.tiles import append_tiles, node_from_tile, tile_of
from partners.transparency import ForkDetected, ProofError, verify_consistency, verify_inclusion

h = bytes.fromhex

LEAF_INPUTS = [h(x) for x in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]]  # fmt: skip
LEAF_HASHES = [h(x) for x in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]]  # fmt: skip
ROOTS = [h(x) for x in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]  # fmt: skip
INCLUSION = [  # (0-based leaf index, tree size, proof)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

NODES = tree.nodes_of_leaves(LEAF_HASHES)


def test_leaf_hashes() -> None:
    assert [tree.leaf_hash(data) for data in LEAF_INPUTS] == LEAF_HASHES


@pytest.mark.parametrize("size", range(9))
def test_roots(size: int) -> None:
    assert tree.range_hash(0, size, NODES) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    plan = tree.inclusion_plan(index, size)
    assert [p.hex() for p in tree.fold(plan, NODES)] == proof
    verify_inclusion(index, size, LEAF_HASHES[index], [h(p) for p in proof], ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    plan = tree.consistency_plan(old, new)
    assert [p.hex() for p in tree.fold(plan, NODES)] == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], [h(p) for p in proof])


def test_every_proof_of_the_vector_tree_verifies() -> None:
    for size in range(1, 9):
        for index in range(size):
            proof = tree.fold(tree.inclusion_plan(index, size), NODES)
            verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])
        for old in range(1, size + 1):
            proof = tree.fold(tree.consistency_plan(old, size), NODES)
            verify_consistency(old, size, ROOTS[old], ROOTS[size], proof)


def test_a_changed_proof_fails() -> None:
    index, size, proof = INCLUSION[2]
    bad = [h(p) for p in proof]
    bad[1] = bytes(32)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, LEAF_HASHES[index], bad, ROOTS[size])
    with pytest.raises(ProofError):
        verify_inclusion(index, size, LEAF_HASHES[index + 1], [h(p) for p in proof], ROOTS[size])
    old, new, cproof = CONSISTENCY[2]
    with pytest.raises(ForkDetected):
        verify_consistency(old, new, ROOTS[old], ROOTS[new - 1], [h(p) for p in cproof])
    with pytest.raises(ForkDetected):
        verify_consistency(old, new, ROOTS[old], ROOTS[new], [h(p) for p in cproof[:-1]])
    with pytest.raises(ForkDetected):
        verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])


def test_tiles_agree_with_the_plain_tree() -> None:
    """Appending in uneven runs to a tiled tree of 70 000 leaves (three tile levels) gives the
    nodes the plain tree has, and the same roots at every boundary crossed."""
    leaves = [tree.leaf_hash(i.to_bytes(4, "big")) for i in range(70_000)]
    tiles: dict[tuple[int, int], bytes] = {}
    size = 0
    for run in (1, 255, 1, 300, 65_000, 4_443):
        edges = {lvl: tiles[key] for lvl, key in _edge_keys(size).items()}
        tiles.update(append_tiles(size, edges, leaves[size : size + run]))
        size += run
    assert size == 70_000
    plain = tree.nodes_of_leaves(leaves)
    for node in [(0, 0), (0, 69_999), (3, 17), (8, 0), (8, 272), (9, 135), (16, 0)]:
        assert node_from_tile(node, tiles) == plain[node]
    for n in (1, 256, 257, 65_536, 65_537, 70_000):
        nodes = {node: node_from_tile(node, tiles) for node in tree.nodes_for([(0, n)])}
        assert tree.range_hash(0, n, nodes) == _plain_root(leaves[:n])
    assert tile_of((16, 1)) == ((2, 0), 1, 1)


def _edge_keys(size: int) -> dict[int, tuple[int, int]]:
    from exchange.transparency.tiles import edge_tiles

    return {level: (level, index) for level, (index, _) in edge_tiles(size).items()}


def _plain_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return tree.node_hash(_plain_root(leaves[:k]), _plain_root(leaves[k:]))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_proofs_from_tiles_verify(data: st.DataObject) -> None:
    """Proofs folded from a tiled tree of up to 3 000 leaves verify with the SDK."""
    size = data.draw(st.integers(1, len(BIG_LEAVES)))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(1, size))
    nodes = {node: node_from_tile(node, BIG_TILES) for node in tree.nodes_for([(0, size)])}
    root = tree.range_hash(0, size, nodes)
    plan = tree.inclusion_plan(index, size)
    proof = tree.fold(plan, {n: node_from_tile(n, BIG_TILES) for n in tree.nodes_for(plan)})
    verify_inclusion(index, size, BIG_LEAVES[index], proof, root)
    plan = tree.consistency_plan(old, size)
    proof = tree.fold(plan, {n: node_from_tile(n, BIG_TILES) for n in tree.nodes_for(plan)})
    old_nodes = {n: node_from_tile(n, BIG_TILES) for n in tree.nodes_for([(0, old)])}
    verify_consistency(old, size, tree.range_hash(0, old, old_nodes), root, proof)


BIG_LEAVES = [tree.leaf_hash(i.to_bytes(4, "big")) for i in range(3_000)]
BIG_TILES = append_tiles(0, {}, BIG_LEAVES)
