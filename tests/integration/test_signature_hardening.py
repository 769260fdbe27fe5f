"""Issue 15, the signature findings: a request signed twice cannot be replayed with a label
dropped, reordered or added; an unknown or revoked key id costs the same Ed25519 verification as
a known one; several Host fields are a 400."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import partners.httpsig as httpsig
from partners.httpsig import sign_request
from partners.service import revoke_key
from tests.integration.conftest import Credentials, Partners, SignedApi

REDEEM = b'{"member_ref": "alice", "points": 5}'
PROBLEMS = "https://exchange.example/problems/"


def _signature(signer: Credentials, label: str, nonce: str, key_id: str | None = None) -> Any:
    return sign_request(
        method="POST",
        path="/v1/redemptions",
        query="",
        authority=None,
        headers={"Content-Type": "application/json", "Idempotency-Key": "rotation-1"},
        body=REDEEM,
        key_id=key_id or signer.key_id,
        alg=signer.alg,
        key=signer.key,
        created=int(time.time()),
        nonce=nonce,
        label=label,
    )


def _headers(*signatures: dict[str, str]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": "rotation-1",
        "Content-Digest": signatures[0]["Content-Digest"],
        "Signature-Input": ", ".join(s["Signature-Input"] for s in signatures),
        "Signature": ", ".join(s["Signature"] for s in signatures),
    }


async def test_a_request_signed_twice_cannot_be_replayed_with_a_label_dropped(
    api: SignedApi, partners: Partners
) -> None:
    """Signed with the old and the new key (a rotation), refused (422: alice has nothing);
    sent again within the window with one label dropped, the labels swapped, or a captured
    label added to a fresh one: each is a replay, 401, and nothing is posted."""
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    old = _signature(partners.sky, "old", "nonce-old")
    new = _signature(partners.sky_hmac, "new", "nonce-new")
    first = await api.post("/v1/redemptions", body=REDEEM, as_=None, headers=_headers(old, new))
    assert first.status_code == 422
    assert first.json()["type"] == PROBLEMS + "insufficient-points"
    await api.post("/v1/issuances", {"member_ref": "alice", "points": 100}, as_=partners.sky)
    before = await api.ledger_size()
    fresh = _signature(partners.sky, "fresh", "nonce-fresh")
    for replay in (_headers(new), _headers(old), _headers(new, old), _headers(fresh, new)):
        answer = await api.post("/v1/redemptions", body=REDEEM, as_=None, headers=replay)
        assert answer.status_code == 401, answer.text
        assert answer.json()["type"] == PROBLEMS + "signature-invalid"
    assert await api.ledger_size() == before


async def test_unknown_and_revoked_key_ids_cost_one_ed25519_verification(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing must not tell a key id that exists from one that does not: with no key to check
    against, the signature is verified against a fixed dummy Ed25519 key, so a known key with a
    bad signature, an unknown key id and a revoked key each run exactly one verification."""
    calls: list[tuple[str, object]] = []
    real_verify = httpsig._verify

    def observed(alg: str, material: Any, data: bytes, signature: bytes) -> bool:
        if material not in api.exchange_keys.values():  # not the test's check of the answer
            calls.append((alg, material))
        return real_verify(alg, material, data, signature)

    monkeypatch.setattr(httpsig, "_verify", observed)
    stranger = Credentials(
        partners.sky.partner, "no-such-key", "ed25519", Ed25519PrivateKey.generate()
    )
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    async with sessions() as session, session.begin():
        await revoke_key(session, partners.sky_hmac.key_id)
    revoked = Credentials(partners.sky.partner, partners.sky_hmac.key_id, "ed25519", stranger.key)
    impostor = Credentials(partners.sky.partner, partners.sky.key_id, "ed25519", stranger.key)
    for who in (stranger, revoked, impostor):
        calls.clear()
        answer = await api.get("/v1/members/alice", as_=who)
        assert answer.status_code == 401
        assert [alg for alg, _ in calls] == ["ed25519"], who.key_id
    assert calls[0][1] != httpsig._DUMMY_KEY  # the known key: its own material
    calls.clear()
    await api.get("/v1/members/alice", as_=stranger)
    assert calls == [("ed25519", httpsig._DUMMY_KEY)]


async def test_several_host_fields_are_a_bad_request(api: SignedApi, partners: Partners) -> None:
    before = await api.ledger_size()
    answer = await api.client.request(
        "GET", "/v1/partners/me", headers=[("host", "exchange.example"), ("host", "evil.example")]
    )
    assert answer.status_code == 400
    assert answer.json()["type"] == PROBLEMS + "bad-request"
    assert await api.ledger_size() == before
