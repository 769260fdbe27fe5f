"""Rotating the master key: every HMAC secret re-encrypted, none readable under the old key."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.settings import Settings
from exchange.signing import load_master_key
from partners.models import PartnerKey
from partners.service import add_key, decrypt_secret
from tests.conftest import make_partner
from tests.integration.operator_cli import litestar


async def _hmac_keys(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, master: bytes
) -> dict[str, bytes]:
    brand = await make_partner(sessions, settings, "brand", "Rail", "RAIL")
    secrets: dict[str, bytes] = {}
    async with sessions() as session, session.begin():
        for _ in range(3):
            key = await add_key(session, partner_id=brand.id, alg="hmac-sha256", master_key=master)
            assert key.secret is not None
            secrets[key.key_id] = base64.b64decode(key.secret)
    return secrets


async def _rows(sessions: async_sessionmaker[AsyncSession]) -> list[PartnerKey]:
    async with sessions() as session:
        return list((await session.scalars(select(PartnerKey))).all())


async def test_reencrypt_command_moves_every_secret_to_the_new_master_key(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    old = load_master_key(settings)  # the development key the command will also find
    secrets = await _hmac_keys(sessions, settings, old)
    new = os.urandom(32)
    key_file = settings.data_dir / "new-master-key"
    key_file.write_bytes(base64.b64encode(new))

    done = litestar(
        settings, "partners", "reencrypt-secrets", "--new-master-key-file", str(key_file)
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"reencrypted": 3}
    rows = await _rows(sessions)
    assert {row.id for row in rows} == set(secrets)
    for row in rows:
        assert row.secret_nonce is not None and row.secret_ciphertext is not None
        assert (
            decrypt_secret(new, row.id, row.secret_nonce, row.secret_ciphertext) == secrets[row.id]
        )
        with pytest.raises(InvalidTag):
            decrypt_secret(old, row.id, row.secret_nonce, row.secret_ciphertext)


async def test_a_ciphertext_moved_to_another_key_does_not_decrypt(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """The key id is the associated data: swapping two rows' ciphertexts breaks both."""
    master = load_master_key(settings)
    await _hmac_keys(sessions, settings, master)
    first, second = (await _rows(sessions))[:2]
    assert first.secret_nonce and first.secret_ciphertext
    with pytest.raises(InvalidTag):
        decrypt_secret(master, second.id, first.secret_nonce, first.secret_ciphertext)


async def test_a_wrong_length_new_key_is_refused_and_nothing_changes(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    master = load_master_key(settings)
    await _hmac_keys(sessions, settings, master)
    before = [(r.id, r.secret_nonce, r.secret_ciphertext) for r in await _rows(sessions)]
    key_file = settings.data_dir / "short-key"
    key_file.write_bytes(base64.b64encode(os.urandom(16)))

    done = litestar(
        settings, "partners", "reencrypt-secrets", "--new-master-key-file", str(key_file)
    )

    assert done.returncode != 0
    assert [(r.id, r.secret_nonce, r.secret_ciphertext) for r in await _rows(sessions)] == before
