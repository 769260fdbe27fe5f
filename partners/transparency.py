"""What a partner checks on its own: RFC 9162 proofs, signed checkpoints, posting chains.

Nothing here trusts the exchange's code: the verification follows RFC 9162 sections 2.1.3.2
(inclusion) and 2.1.4.2 (consistency) and the C2SP signed-note / tlog-checkpoint formats, and
recomputes posting hashes from the encoding documented in the README ("What a partner can
prove"). Every failure raises :class:`ProofError` (or its :class:`ForkDetected`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS_HASH = bytes(32)
POSTING_LAYOUT = struct.Struct(">11sqq16sqq32sq")
POSTING_PREFIX = b"posting/v2\x00"
LEAF_PREFIX = b"transaction/v1\x00"
SIGNATURE_DASH = "\u2014 "


class ProofError(Exception):
    """The exchange's answer does not prove what it claims."""


class ForkDetected(ProofError):
    """Two checkpoints that cannot both be views of one append-only log."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def transaction_leaf(
    transaction_id: uuid.UUID, kind: str, posting_hashes: Sequence[bytes]
) -> bytes:
    """The log entry of a transaction: prefix, its 16 id bytes, the kind (one length byte, then
    ASCII), the number of postings (4 bytes, big-endian), their 32-byte hashes in order."""
    encoded = kind.encode("ascii")
    return b"".join(
        [LEAF_PREFIX, transaction_id.bytes, bytes([len(encoded)]), encoded,
         len(posting_hashes).to_bytes(4, "big"), *posting_hashes]
    )  # fmt: skip


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: ``leaf`` (a leaf hash) is entry ``index`` of the tree ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise ProofError(f"entry {index} is not in the tree of size {size} with that root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: the tree ``new_root`` of size ``new`` extends ``old_root``."""
    if old > new:
        raise ForkDetected(f"a tree of size {new} cannot extend one of {old}")
    if old == new:
        if proof or old_root != new_root:
            raise ForkDetected(f"two trees of size {old} with different roots")
        return
    if old == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree is empty")
        return
    if not proof:
        raise ForkDetected("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ForkDetected("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ForkDetected(f"the tree of size {new} does not extend the one of size {old}")


@dataclass(frozen=True)
class Checkpoint:
    """A verified tlog-checkpoint: origin, size, root, and the note's signature lines."""

    origin: str
    size: int
    root: bytes
    text: str
    """The whole signed note."""

    @property
    def body(self) -> bytes:
        return self.text.split("\n\n", 1)[0].encode() + b"\n"


def note_key_id(name: str, public: Ed25519PublicKey) -> bytes:
    """C2SP signed-note: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def note_signature_line(name: str, key: Ed25519PrivateKey, body: bytes) -> str:
    """One signature line of a signed note (the exchange's, or a witness's co-signature)."""
    blob = note_key_id(name, key.public_key()) + key.sign(body)
    return f"{SIGNATURE_DASH}{name} {base64.b64encode(blob).decode()}\n"


def _signature_lines(text: str) -> list[tuple[str, bytes]]:
    lines = []
    for line in text.split("\n\n", 1)[1].splitlines():
        if not line.startswith(SIGNATURE_DASH):
            raise ProofError(f"not a signature line: {line!r}")
        name, _, blob = line[len(SIGNATURE_DASH) :].rpartition(" ")
        lines.append((name, base64.b64decode(blob)))
    return lines


def open_checkpoint(text: str, origin: str, keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint:
    """Parse a signed checkpoint and check it is signed by one of ``keys`` under ``origin``."""
    if "\n\n" not in text or not text.endswith("\n"):
        raise ProofError("not a signed note")
    body_text = text.split("\n\n", 1)[0]
    fields = body_text.split("\n")
    if len(fields) < 3 or fields[0] != origin or not fields[1].isdigit():
        raise ProofError(f"not a checkpoint of {origin}")
    body = (body_text + "\n").encode()
    for name, blob in _signature_lines(text):
        if name != origin:
            continue
        for public in keys.values():
            if blob[:4] != note_key_id(name, public):
                continue
            try:
                public.verify(blob[4:], body)
            except InvalidSignature as exc:
                raise ProofError("bad checkpoint signature") from exc
            return Checkpoint(origin, int(fields[1]), base64.b64decode(fields[2]), text)
    raise ProofError("the checkpoint is signed by no key the exchange publishes")


def witnessed_by(checkpoint: Checkpoint, name: str, public: Ed25519PublicKey) -> bool:
    """Whether the checkpoint carries a valid co-signature of ``name`` with ``public``."""
    for line_name, blob in _signature_lines(checkpoint.text):
        if line_name == name and blob[:4] == note_key_id(name, public):
            try:
                public.verify(blob[4:], checkpoint.body)
            except InvalidSignature:
                return False
            return True
    return False


def posting_hash(
    account_id: int, seq: int, transaction_id: uuid.UUID, amount: int, balance_after: int,
    prev_hash: bytes, counterparty: int,
) -> bytes:  # fmt: skip
    """A posting's hash, from the documented encoding."""
    return hashlib.sha256(
        POSTING_LAYOUT.pack(
            POSTING_PREFIX, account_id, seq, transaction_id.bytes, amount, balance_after,
            prev_hash, counterparty,
        )
    ).digest()  # fmt: skip


@dataclass(frozen=True)
class ChainLink:
    """One posting of an account's chain, as the history answer gives it."""

    account_id: int
    seq: int
    transaction_id: uuid.UUID
    amount: int
    balance_after: int
    prev_hash: bytes
    hash: bytes
    counterparty: int


def verify_chain(links: Sequence[ChainLink], *, start_hash: bytes = GENESIS_HASH) -> bytes:
    """Recompute an account's chain, oldest first, from ``start_hash`` (the genesis by default):
    every seq follows the last, every balance follows from the amount, every hash links and is
    what its fields give. Returns the head hash."""
    head, seq, balance = start_hash, None, None
    for link in links:
        if seq is not None and link.seq != seq + 1:
            raise ProofError(f"account {link.account_id}: posting {seq + 1} is missing")
        if balance is not None and link.balance_after != balance + link.amount:
            raise ProofError(f"account {link.account_id}: balance breaks at {link.seq}")
        if link.prev_hash != head:
            raise ProofError(f"account {link.account_id}: chain breaks at {link.seq}")
        computed = posting_hash(
            link.account_id, link.seq, link.transaction_id, link.amount, link.balance_after,
            link.prev_hash, link.counterparty,
        )  # fmt: skip
        if computed != link.hash:
            raise ProofError(f"account {link.account_id}: posting {link.seq} was changed")
        head, seq, balance = link.hash, link.seq, link.balance_after
    return head
