"""Signed checkpoints of the log, in the C2SP tlog-checkpoint / signed-note text format.

A checkpoint's body is three lines: the log's origin, its size in decimal and its root hash in
base64. The exchange signs the body with its Ed25519 key under the origin's name: the signature
line is ``"\u2014 " origin " " base64(key id || signature)`` where the key id is the first four
bytes of ``SHA-256(origin || "\\n" || 0x01 || public key)``, so any signed-note tooling reads
it. Witnesses (partners that verified it) add lines of their own.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.signing import ExchangeKeys
from exchange.transparency.models import LogCheckpoint, LogWitness
from exchange.transparency.sequencer import extend_log
from exchange.transparency.store import root_at

checkpoint_t = cast(Table, LogCheckpoint.__table__)
witness_t = cast(Table, LogWitness.__table__)
DASH = "\u2014 "


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def note_key_id(name: str, public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def sign_checkpoint(keys: ExchangeKeys, origin: str, size: int, root: bytes) -> str:
    """The signed note: body, blank line, the exchange's signature line."""
    body = checkpoint_body(origin, size, root)
    blob = note_key_id(origin, keys.signing_key.public_key()) + keys.sign(body.encode())
    return f"{body}\n{DASH}{origin} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class CheckpointView:
    size: int
    root_hash: bytes
    note: str
    """With every witness's co-signature line appended."""
    witnesses: tuple[str, ...]
    """The partners (ids) that co-signed it."""


async def latest_checkpoint(session: AsyncSession) -> CheckpointView | None:
    row = (
        await session.execute(
            select(checkpoint_t.c.size, checkpoint_t.c.root_hash, checkpoint_t.c.note)
            .order_by(checkpoint_t.c.size.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return await _with_witnesses(session, row.size, bytes(row.root_hash), row.note)


async def checkpoint_at(session: AsyncSession, size: int) -> CheckpointView | None:
    row = (
        await session.execute(
            select(checkpoint_t.c.root_hash, checkpoint_t.c.note).where(checkpoint_t.c.size == size)
        )
    ).first()
    if row is None:
        return None
    return await _with_witnesses(session, size, bytes(row.root_hash), row.note)


async def first_checkpoint_including(session: AsyncSession, index: int) -> int | None:
    """The size of the first checkpoint whose tree holds entry ``index``."""
    return await session.scalar(
        select(checkpoint_t.c.size)
        .where(checkpoint_t.c.size > index)
        .order_by(checkpoint_t.c.size)
        .limit(1)
    )


async def _with_witnesses(
    session: AsyncSession, size: int, root: bytes, note: str
) -> CheckpointView:
    rows = (
        await session.execute(
            select(witness_t.c.partner_id, witness_t.c.signature_line)
            .where(witness_t.c.checkpoint_size == size)
            .order_by(witness_t.c.partner_id)
        )
    ).all()
    lines = "".join(row.signature_line for row in rows)
    return CheckpointView(size, root, note + lines, tuple(str(row.partner_id) for row in rows))


async def make_checkpoint(
    session: AsyncSession, keys: ExchangeKeys, origin: str, late_seconds: int, reason: str
) -> CheckpointView | None:
    """Extend the log and sign a checkpoint of it, unless the newest checkpoint already has this
    size; ``None`` when another replica is sequencing. In the caller's transaction."""
    size = await extend_log(session, late_seconds, wait=reason == "cutoff")
    if size is None:
        return None
    latest = await latest_checkpoint(session)
    if size == 0 or (latest is not None and latest.size == size):
        return latest
    root = await root_at(session, size)
    note = sign_checkpoint(keys, origin, size, root)
    await session.execute(
        checkpoint_t.insert().values(
            size=size, root_hash=root, note=note, reason=reason, created_at=utcnow()
        )
    )
    return CheckpointView(size, root, note, ())
