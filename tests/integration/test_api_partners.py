"""The operator's endpoints: partners and keys, behind an operator key."""

from __future__ import annotations

import base64
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.parties import PartnerInfo
from partners.models import IdempotencyRecord, Partner, PartnerKey
from tests.integration.conftest import Credentials, Partners, SignedApi

PROBLEMS = "https://exchange.example/problems/"


def public_pem(private: Ed25519PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        partners = await session.scalar(select(func.count()).select_from(Partner))
        keys = await session.scalar(select(func.count()).select_from(PartnerKey))
    return int(partners or 0), int(keys or 0)


async def test_operator_onboards_a_brand_with_both_kinds_of_key(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    operator = partners.operator
    created = await api.post(
        "/v1/partners", {"kind": "brand", "name": "Rail Co", "currency": "RAIL"}, as_=operator
    )
    assert created.status_code == 201, created.text
    rail = created.json()
    assert {k: rail[k] for k in ("kind", "name", "currency")} == {
        "kind": "brand",
        "name": "Rail Co",
        "currency": "RAIL",
    }
    listed = await api.get("/v1/partners", as_=operator)
    assert listed.status_code == 200
    assert {p["name"] for p in listed.json()} == {
        "Coalition operator",
        "Sky Air",
        "Hotel Co",
        "Rail Co",
    }

    private = Ed25519PrivateKey.generate()
    ed_key = await api.post(
        f"/v1/partners/{rail['id']}/keys",
        {"alg": "ed25519", "public_key": public_pem(private)},
        as_=operator,
    )
    assert ed_key.status_code == 201, ed_key.text
    assert ed_key.json()["secret"] is None
    rail_info = PartnerInfo(uuid.UUID(rail["id"]), "brand", "Rail Co", "RAIL", shards=4)
    rail_ed = Credentials(rail_info, ed_key.json()["key_id"], "ed25519", private)
    me = await api.get("/v1/partners/me", as_=rail_ed)
    assert me.status_code == 200
    assert me.json()["id"] == rail["id"]

    hmac_key = await api.post(
        f"/v1/partners/{rail['id']}/keys",
        {"alg": "hmac-sha256"},
        as_=operator,
        idempotency_key="rail-hmac",
    )
    assert hmac_key.status_code == 201
    secret = hmac_key.json()["secret"]
    assert len(base64.b64decode(secret)) == 32
    # A retry gets the same key, never the secret again.
    retry = await api.post(
        f"/v1/partners/{rail['id']}/keys",
        {"alg": "hmac-sha256"},
        as_=operator,
        idempotency_key="rail-hmac",
    )
    assert retry.status_code == 201
    assert retry.json() == {**hmac_key.json(), "secret": None}
    async with sessions() as session:
        stored = await session.scalar(
            select(IdempotencyRecord.response_body).where(IdempotencyRecord.key == "rail-hmac")
        )
    assert stored is not None and secret.encode() not in stored
    rail_hmac = Credentials(
        rail_info, hmac_key.json()["key_id"], "hmac-sha256", base64.b64decode(secret)
    )
    assert (await api.get("/v1/partners/me", as_=rail_hmac)).json()["name"] == "Rail Co"
    assert (await api.post("/v1/members", {"member_ref": "r1"}, as_=rail_hmac)).status_code == 201

    revoked = await api.post(f"/v1/keys/{rail_hmac.key_id}/revocation", as_=operator)
    assert revoked.status_code == 200
    assert revoked.json()["key_id"] == rail_hmac.key_id
    assert revoked.json()["partner_id"] == rail["id"]
    assert (await api.get("/v1/partners/me", as_=rail_hmac)).status_code == 401
    assert (await api.get("/v1/partners/me", as_=rail_ed)).status_code == 200


async def test_operator_routes_refuse_a_brand_key(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = await counts(sessions)
    sky = partners.sky
    attempts = [
        await api.post("/v1/partners", {"kind": "brand", "name": "X", "currency": "XX"}, as_=sky),
        await api.get("/v1/partners", as_=sky),
        await api.post(f"/v1/partners/{sky.partner.id}/keys", {"alg": "hmac-sha256"}, as_=sky),
        await api.post(f"/v1/keys/{partners.htl.key_id}/revocation", as_=sky),
    ]
    for answer in attempts:
        assert answer.status_code == 403, answer.text
        assert answer.json()["type"] == PROBLEMS + "operator-only"
    assert await counts(sessions) == before
    assert (await api.get("/v1/partners/me", as_=partners.htl)).status_code == 200


async def test_operator_input_is_checked(api: SignedApi, partners: Partners) -> None:
    operator = partners.operator
    no_currency = await api.post("/v1/partners", {"kind": "brand", "name": "X"}, as_=operator)
    assert no_currency.status_code == 422
    assert no_currency.json()["type"] == PROBLEMS + "invalid-input"
    taken = await api.post(
        "/v1/partners", {"kind": "brand", "name": "X", "currency": "SKY"}, as_=operator
    )
    assert taken.json()["type"] == PROBLEMS + "invalid-input"
    bad_kind = await api.post("/v1/partners", {"kind": "bank", "name": "X"}, as_=operator)
    assert bad_kind.status_code == 422
    assert bad_kind.json()["type"] == PROBLEMS + "invalid-request"
    nobody = await api.post(f"/v1/partners/{uuid.uuid4()}/keys", {"alg": "ed25519"}, as_=operator)
    assert nobody.status_code == 404
    assert nobody.json()["type"] == PROBLEMS + "partner-not-found"
    no_pem = await api.post(
        f"/v1/partners/{partners.sky.partner.id}/keys", {"alg": "ed25519"}, as_=operator
    )
    assert no_pem.status_code == 422
    not_pem = await api.post(
        f"/v1/partners/{partners.sky.partner.id}/keys",
        {"alg": "ed25519", "public_key": "hello"},
        as_=operator,
    )
    assert not_pem.status_code == 422
    charity = await api.post(
        "/v1/partners",
        {"kind": "charity", "name": "Clean Seas", "min_donation_points": 100},
        as_=operator,
    )
    assert charity.status_code == 201
    assert charity.json()["currency"] is None
    assert charity.json()["min_donation_points"] == 100
