"""The chain encoding: how a posting is hashed onto its account's chain.

Every posting carries its account's ``seq``, the balance after it, the previous posting's hash
and its own: SHA-256 over :data:`POSTING_LAYOUT`, fixed widths (prefix, account id, seq,
transaction id, amount, balance after, previous hash, counterparty account), so no two different
postings encode to the same bytes and there is no text to normalise. The engine
(``exchange.ledger.engine``) chains with it and ``exchange.ledger.verify`` recomputes it; both
call :func:`digest`, or inline the same :data:`POSTING_LAYOUT` and :data:`POSTING_PREFIX`."""

from __future__ import annotations

import hashlib
import struct
import uuid

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of an account's first posting."""

SEVERAL_COUNTERPARTIES = 0
"""The ``counterparty_account_id`` of every posting of a transaction that has several partners
on both sides of a ledger: settlement pairs those with ``settlement.netting.pair_legs``."""

POSTING_LAYOUT = struct.Struct(">11sqq16sqq32sq")
POSTING_PREFIX = b"posting/v2\x00"
"""The prefix names the encoding; ``v2`` because the counterparty was added to a first draft,
and the bytes (which stored hashes depend on) stay as they are."""

_pack = POSTING_LAYOUT.pack
_sha256 = hashlib.sha256


def digest(
    account_id: int,
    seq: int,
    transaction_bytes: bytes,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
    counterparty: int,
) -> bytes:
    """A posting's hash, from the transaction id's 16 bytes (the engine takes them once per
    transaction, verify reads them straight from PostgreSQL)."""
    return _sha256(
        _pack(
            POSTING_PREFIX, account_id, seq, transaction_bytes, amount, balance_after, prev_hash,
            counterparty,
        )
    ).digest()  # fmt: skip


def posting_hash(
    account_id: int,
    seq: int,
    transaction_id: uuid.UUID,
    amount: int,
    balance_after: int,
    prev_hash: bytes,
    counterparty: int,
) -> bytes:
    """SHA-256 over the posting encoding: no separators, no text to normalise."""
    return digest(
        account_id, seq, transaction_id.bytes, amount, balance_after, prev_hash, counterparty
    )
