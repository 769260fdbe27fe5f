"""Co-signatures: a partner that verified a checkpoint adds its own signed-note line to it."""

from __future__ import annotations

import base64
import binascii
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.errors import InvalidInput
from exchange.ledger.parties import PartnerInfo
from exchange.transparency.checkpoints import (
    DASH,
    CheckpointView,
    checkpoint_at,
    note_key_id,
    witness_t,
)
from partners.models import PartnerKey

key_t = cast(Table, PartnerKey.__table__)


def _parse_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(DASH) or not line.endswith("\n") or line.count("\n") != 1:
        raise InvalidInput("not one signed-note signature line", field="signature_line")
    name, _, blob = line[len(DASH) : -1].rpartition(" ")
    try:
        return name, base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("the signature is not base64", field="signature_line") from exc


async def add_witness(
    session: AsyncSession, caller: PartnerInfo, size: int, line: str
) -> CheckpointView:
    """Store the caller's co-signature of checkpoint ``size``: ``line`` must be signed by one of
    the caller's active Ed25519 keys, named by its key id. Again with the same partner: the
    first co-signature stays."""
    checkpoint = await checkpoint_at(session, size)
    if checkpoint is None:
        raise InvalidInput(f"no checkpoint of size {size}", field="size")
    name, blob = _parse_line(line)
    raw = await session.scalar(
        select(key_t.c.public_key).where(
            key_t.c.id == name,
            key_t.c.partner_id == caller.id,
            key_t.c.alg == "ed25519",
            key_t.c.revoked_at.is_(None),
        )
    )
    if raw is None:
        raise InvalidInput(
            "the line is not named by one of your Ed25519 keys", field="signature_line"
        )
    public = Ed25519PublicKey.from_public_bytes(bytes(raw))
    body = checkpoint.note.split("\n\n", 1)[0].encode() + b"\n"
    try:
        if blob[:4] != note_key_id(name, public):
            raise InvalidSignature
        public.verify(blob[4:], body)
    except InvalidSignature as exc:
        raise InvalidInput("the co-signature does not verify", field="signature_line") from exc
    if str(caller.id) not in checkpoint.witnesses:
        await session.execute(
            witness_t.insert().values(
                checkpoint_size=size,
                partner_id=caller.id,
                key_id=name,
                signature_line=line,
                created_at=utcnow(),
            )
        )
    witnessed = await checkpoint_at(session, size)
    assert witnessed is not None
    return witnessed
