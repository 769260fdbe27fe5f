"""Onboarding partners and managing their keys."""

from __future__ import annotations

import base64
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339, utcnow, uuid7
from exchange.errors import InvalidInput, KeyNotFound, PartnerNotFound
from exchange.ledger.chain import GENESIS_HASH
from exchange.ledger.models import Account
from exchange.ledger.parties import PartnerInfo
from partners.models import KEY_ALGS, PARTNER_KINDS, Partner, PartnerKey

_CURRENCY = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")


def _info(row: Partner) -> PartnerInfo:
    return PartnerInfo(
        row.id, row.kind, row.name, row.currency, row.shards, row.min_donation_points
    )


async def _check_name_and_code(
    session: AsyncSession, kind: str, name: str, code: str | None
) -> None:
    """Two partners of one kind never share a name; a code is a charity's, and unique."""
    if await session.scalar(select(Partner.id).where(Partner.kind == kind, Partner.name == name)):
        raise InvalidInput(f"a {kind} named {name!r} exists already", name=name)
    if code is None:
        return
    if kind != "charity":
        raise InvalidInput("only a charity has a code (a brand is named by its currency)")
    if not _CURRENCY.match(code):
        raise InvalidInput("a charity code is 2-16 of A-Z and 0-9, starting with a letter")
    if await session.scalar(select(Partner.id).where(Partner.code == code)):
        raise InvalidInput(f"code {code} is taken", code=code)


async def find_charity_by_code(session: AsyncSession, code: str) -> PartnerInfo | None:
    row = await session.scalar(
        select(Partner).where(Partner.code == code.upper(), Partner.kind == "charity")
    )
    return None if row is None else _info(row)


async def charity_codes(session: AsyncSession) -> dict[uuid.UUID, str | None]:
    """Every charity's code, by partner id."""
    rows = await session.execute(select(Partner.id, Partner.code).where(Partner.kind == "charity"))
    return {row.id: row.code for row in rows}


async def create_partner(
    session: AsyncSession,
    *,
    kind: str,
    name: str,
    currency: str | None,
    settlement_currency: str,
    shards: int,
    min_donation_points: int | None = None,
    code: str | None = None,
) -> PartnerInfo:
    """Register a partner and open its accounts: issuance shards and a breakage account on its
    own points ledger (brands), and settlement shards on the money ledger (everyone). Names are
    unique per kind; a charity may have a stable ``code`` (``AID``) that donations name it by."""
    if kind not in PARTNER_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(PARTNER_KINDS)}")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name must be 1 to 200 characters")
    if kind == "brand":
        if currency is None or not _CURRENCY.match(currency):
            raise InvalidInput("a brand needs a currency code: 2-16 of A-Z and 0-9")
        if currency == settlement_currency:
            raise InvalidInput("a points currency cannot share the settlement currency's code")
        if await session.scalar(select(Partner.id).where(Partner.currency == currency)):
            raise InvalidInput(f"currency {currency} is taken")
    elif currency is not None:
        raise InvalidInput("only a brand has a points currency")
    await _check_name_and_code(session, kind, name, code)
    if kind == "operator" and await session.scalar(
        select(Partner.id).where(Partner.kind == "operator")
    ):
        raise InvalidInput("the exchange has an operator already")
    if min_donation_points is not None and (kind != "charity" or min_donation_points < 1):
        raise InvalidInput("only a charity sets a minimum donation, of at least 1 point")
    partner = Partner(
        id=uuid7(),
        kind=kind,
        name=name,
        currency=currency,
        code=code,
        shards=shards,
        min_donation_points=min_donation_points,
        created_at=utcnow(),
    )
    session.add(partner)
    await session.flush()
    pools = [("settlement", settlement_currency, shards)]
    if kind == "brand":
        assert currency is not None
        # The breakage account takes the brand's expired points: one, the expiry run is its
        # only writer.
        pools += [("issuance", currency, shards), ("breakage", currency, 1)]
    await session.execute(
        insert(cast(Table, Account.__table__)),
        [
            {
                "ledger": ledger,
                "kind": pool,
                "partner_id": partner.id,
                "member_id": None,
                "shard": shard,
                "balance": 0,
                "held": 0,
                "seq": 0,
                "head_hash": GENESIS_HASH,
                "created_at": utcnow(),
            }
            for pool, ledger, count in pools
            for shard in range(count)
        ],
    )
    return _info(partner)


async def get_partner(session: AsyncSession, partner_id: uuid.UUID) -> PartnerInfo:
    row = await session.get(Partner, partner_id)
    if row is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return _info(row)


async def find_partner_by_currency(session: AsyncSession, currency: str) -> PartnerInfo | None:
    row = await session.scalar(select(Partner).where(Partner.currency == currency))
    return None if row is None else _info(row)


def new_key_id(partner_id: uuid.UUID) -> str:
    return f"{partner_id.hex[:8]}-{secrets.token_hex(8)}"


def encrypt_secret(master_key: bytes, key_id: str, secret: bytes) -> tuple[bytes, bytes]:
    """AES-GCM under the master key, the key id bound in as associated data, so a ciphertext
    moved onto another key's row does not decrypt."""
    nonce = os.urandom(12)
    return nonce, AESGCM(master_key).encrypt(nonce, secret, key_id.encode())


def decrypt_secret(master_key: bytes, key_id: str, nonce: bytes, ciphertext: bytes) -> bytes:
    return AESGCM(master_key).decrypt(nonce, ciphertext, key_id.encode())


@dataclass(frozen=True)
class NewKey:
    key_id: str
    partner_id: uuid.UUID
    alg: str
    secret: str | None
    """The HMAC secret, base64: shown once, at creation, never again."""


async def add_key(
    session: AsyncSession,
    *,
    partner_id: uuid.UUID,
    alg: str,
    master_key: bytes,
    public_key_pem: bytes | None = None,
) -> NewKey:
    """Register a signing key for a partner."""
    await get_partner(session, partner_id)
    if alg not in KEY_ALGS:
        raise InvalidInput(f"alg must be one of {', '.join(KEY_ALGS)}")
    key_id = new_key_id(partner_id)
    row = PartnerKey(id=key_id, partner_id=partner_id, alg=alg, created_at=utcnow())
    secret_b64: str | None = None
    if alg == "ed25519":
        if public_key_pem is None:
            raise InvalidInput("an ed25519 key needs its public key (PEM)")
        try:
            public = serialization.load_pem_public_key(public_key_pem)
        except ValueError as exc:
            raise InvalidInput("the public key is not a PEM public key") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise InvalidInput("the public key is not an Ed25519 key")
        row.public_key = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        if public_key_pem is not None:
            raise InvalidInput("an hmac-sha256 key is made by the exchange; give no public key")
        secret = secrets.token_bytes(32)
        row.secret_nonce, row.secret_ciphertext = encrypt_secret(master_key, key_id, secret)
        secret_b64 = base64.b64encode(secret).decode()
    session.add(row)
    await session.flush()
    return NewKey(key_id=key_id, partner_id=partner_id, alg=alg, secret=secret_b64)


async def revoke_key(session: AsyncSession, key_id: str) -> PartnerKey:
    row = await session.get(PartnerKey, key_id)
    if row is None:
        raise KeyNotFound(f"no key {key_id}", key_id=key_id)
    if row.revoked_at is None:
        await session.execute(
            update(PartnerKey).where(PartnerKey.id == key_id).values(revoked_at=utcnow())
        )
        await session.refresh(row)
    return row


async def reencrypt_secrets(session: AsyncSession, old_master: bytes, new_master: bytes) -> int:
    """Re-encrypt every HMAC secret under a new master key; returns how many."""
    rows = (await session.scalars(select(PartnerKey).where(PartnerKey.alg == "hmac-sha256"))).all()
    for row in rows:
        assert row.secret_nonce is not None and row.secret_ciphertext is not None
        secret = decrypt_secret(old_master, row.id, row.secret_nonce, row.secret_ciphertext)
        row.secret_nonce, row.secret_ciphertext = encrypt_secret(new_master, row.id, secret)
    await session.flush()
    return len(rows)


async def list_keys(session: AsyncSession, partner_id: uuid.UUID) -> list[dict[str, Any]]:
    """A partner's keys, oldest first: id, alg, when made and revoked; never a secret. An unknown
    partner is :class:`PartnerNotFound`."""
    if await session.get(Partner, partner_id) is None:
        raise PartnerNotFound(f"no partner {partner_id}", partner_id=str(partner_id))
    rows = await session.execute(
        select(PartnerKey.id, PartnerKey.alg, PartnerKey.created_at, PartnerKey.revoked_at)
        .where(PartnerKey.partner_id == partner_id)
        .order_by(PartnerKey.created_at, PartnerKey.id)
    )
    return [
        {
            "key_id": row.id,
            "alg": row.alg,
            "created_at": rfc3339(row.created_at),
            "revoked_at": None if row.revoked_at is None else rfc3339(row.revoked_at),
            "active": row.revoked_at is None,
        }
        for row in rows
    ]


async def list_partners(session: AsyncSession) -> list[PartnerInfo]:
    rows = await session.execute(
        select(
            Partner.id,
            Partner.kind,
            Partner.name,
            Partner.currency,
            Partner.shards,
            Partner.min_donation_points,
        ).order_by(Partner.created_at, Partner.id)
    )
    return [
        PartnerInfo(row.id, row.kind, row.name, row.currency, row.shards, row.min_donation_points)
        for row in rows
    ]
