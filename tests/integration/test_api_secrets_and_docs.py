"""HMAC secrets never rest in the database in the clear; the OpenAPI document is complete."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import Connection, MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conftest import Partners, SignedApi


def _every_value(conn: Connection) -> list[Any]:
    """Every column of every row of every table, found by reflecting the live schema."""
    metadata = MetaData()
    metadata.reflect(conn)
    assert {"partner_key", "idempotency_record", "signature_nonce"} <= set(metadata.tables)
    values = []
    for table in metadata.sorted_tables:
        for row in conn.execute(select(table)):
            values.extend(row)
    return values


def _encodings(secret: bytes) -> set[bytes]:
    standard = base64.b64encode(secret)
    urlsafe = base64.urlsafe_b64encode(secret)
    return {
        secret,
        standard,
        standard.rstrip(b"="),
        urlsafe,
        urlsafe.rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    }


async def test_no_table_holds_an_hmac_secret(
    api: SignedApi, partners: Partners, engine: AsyncEngine
) -> None:
    # One secret made through the service (the fixture), one through the API, answered twice.
    operator = partners.operator
    path = f"/v1/partners/{partners.htl.partner.id}/keys"
    made = await api.post(path, {"alg": "hmac-sha256"}, as_=operator, idempotency_key="h")
    again = await api.post(path, {"alg": "hmac-sha256"}, as_=operator, idempotency_key="h")
    assert (made.status_code, again.status_code) == (201, 201)
    secrets = [partners.sky_hmac.key, base64.b64decode(made.json()["secret"])]
    assert all(isinstance(s, bytes) and len(s) == 32 for s in secrets)
    # Use both keys, so that nonces and idempotency records exist too.
    assert (await api.get("/v1/partners/me", as_=partners.sky_hmac)).status_code == 200

    async with engine.connect() as conn:
        values = await conn.run_sync(_every_value)
    blob = b"\x00".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in values
    )
    assert len(blob) > 1000
    for secret in secrets:
        for encoded in _encodings(secret):  # type: ignore[arg-type]
            assert encoded not in blob


async def test_every_operation_is_documented(api: SignedApi) -> None:
    answer = await api.get("/docs/openapi.json", as_=None)
    assert answer.status_code == 200
    document = answer.json()
    operation_ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("operationId"), where
            assert operation.get("summary"), where
            operation_ids.append(operation["operationId"])
            if not path.startswith("/v1/") or path == "/v1/keys":
                continue
            responses = operation["responses"]
            for status in ("400", "401", "422", "500"):
                content = responses[status]["content"]
                assert "application/problem+json" in content, (where, status)
            headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
            assert {"Signature", "Signature-Input", "Content-Digest"} <= headers, where
            assert ("Idempotency-Key" in headers) == (method == "post"), where
    assert len(operation_ids) == len(set(operation_ids))
    assert {
        "getCallingPartner", "enrolMember", "getMember", "listMemberTransactions",
        "createIssuance", "createRedemption", "createTransfer", "createHold", "captureHold",
        "voidHold", "getHold", "reverseTransaction", "getTransaction", "createPartner",
        "listPartners", "addPartnerKey", "revokePartnerKey",
    } <= set(operation_ids)  # fmt: skip
    page = await api.get("/docs", as_=None)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
