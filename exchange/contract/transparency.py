"""Answers of the transaction log: checkpoints, proofs, co-signatures. Hashes are hex."""

from __future__ import annotations

import uuid

import msgspec

from exchange.contract.schemas import RequestBody


class CheckpointOut(msgspec.Struct):
    origin: str
    size: int
    root_hash: str
    note: str
    """The C2SP signed note (tlog-checkpoint), witnesses' co-signature lines included."""
    witnesses: list[str]
    """Ids of the partners that co-signed this checkpoint."""


class InclusionProofOut(msgspec.Struct):
    transaction_id: uuid.UUID
    kind: str
    posting_hashes: list[str]
    """Every posting's hash, ordered by account id then seq: with the id and kind, the leaf."""
    leaf_index: int
    tree_size: int
    """The size asked for or, without one, the first checkpoint's that includes the entry."""
    proof: list[str]
    """RFC 9162 inclusion path, leaf side first."""
    checkpoint: str | None = None
    """Without a size asked for: the signed note of that first checkpoint."""


class ConsistencyProofOut(msgspec.Struct):
    from_size: int
    to_size: int
    proof: list[str]


class WitnessCreate(RequestBody):
    size: int
    """The checkpoint's tree size."""
    signature_line: str
    """A signed-note signature line over the checkpoint's body: ``"\u2014 " name " "
    base64(key id || Ed25519 signature)``, ``name`` being the partner's registered key id."""
