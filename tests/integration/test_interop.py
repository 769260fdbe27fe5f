"""Interoperability with an RFC 9421 implementation that is not ours: ``http_message_signatures``.

Requests signed by the package's ``HTTPMessageSigner`` (with the exchange's policy: ``@method``,
``@path``, ``@query`` when there is a query, ``content-digest`` when there is a body; ``created``,
``keyid``, ``nonce`` and ``alg``) and sent with plain httpx to a real exchange over TCP are
accepted, including with the RFC 9421 Appendix B.2.6 key registered as a brand's key; and the
package's ``HTTPMessageVerifier`` accepts the exchange's signatures on its answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

import http_message_signatures as hms
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.models import LedgerTransaction, Posting
from exchange.ledger.parties import PartnerInfo
from partners.httpsig import signature_base
from partners.service import add_key
from tests.integration.conftest import register_key
from tests.integration.live_server import LiveServer, live_server

__all__ = ["live_server"]  # the fixture, imported for pytest

PROBLEMS = "https://exchange.example/problems/"

# RFC 9421 Appendix B.1.4 / B.2.6 (see /work/shared/vectors/rfc9421.md).
RFC_D = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
RFC_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9"
    "EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def package_sign(
    request: httpx.Request,
    key_id: str,
    key: Ed25519PrivateKey | bytes,
    *,
    components: Sequence[str] | None = None,
    nonce: str | None = None,
) -> None:
    """Sign ``request`` in place with the package, as a partner using it would for our API."""
    algorithm = (
        hms.algorithms.ED25519 if isinstance(key, Ed25519PrivateKey) else hms.algorithms.HMAC_SHA256
    )
    signer = hms.HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=hms.MappingKeyResolver(public_keys={}, private_keys={key_id: key}),
    )
    if components is None:
        components = ["@method", "@path", *(["@query"] if request.url.query else [])]
        if request.method == "POST" and "idempotency-key" in request.headers:
            components.append("idempotency-key")
    signer.sign(
        request,
        key_id=key_id,
        created=dt.datetime.now(dt.UTC),
        nonce=nonce or secrets.token_urlsafe(16),
        label="partner",
        covered_component_ids=components,
        body=request.content or None,  # a body: Content-Digest added and covered
    )


def send(
    server: LiveServer,
    method: str,
    path: str,
    key_id: str,
    key: Ed25519PrivateKey | bytes,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    **sign: Any,
) -> httpx.Response:
    headers = {"Idempotency-Key": secrets.token_hex(8)} if method == "POST" else {}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        request = client.build_request(method, path, json=json, params=params, headers=headers)
        package_sign(request, key_id, key, **sign)
        return client.send(request)


async def ledger_size(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        transactions = await session.scalar(select(func.count()).select_from(LedgerTransaction))
        postings = await session.scalar(select(func.count()).select_from(Posting))
    return int(transactions or 0), int(postings or 0)


def package_verifier(server: LiveServer) -> hms.HTTPMessageVerifier:
    return hms.HTTPMessageVerifier(
        signature_algorithm=hms.algorithms.ED25519,
        key_resolver=hms.MappingKeyResolver(public_keys=server.exchange_keys, private_keys={}),
    )


def package_verifies(server: LiveServer, response: httpx.Response) -> list[hms.VerifyResult]:
    """The package's verdict on an answer of the exchange: ``@status`` and ``content-digest``
    covered, the digest matching the body, signed by a published key within the last minute."""
    return package_verifier(server).verify(
        response,
        require_components=("@status", "content-digest"),
        body=response.content,
        max_age=dt.timedelta(seconds=60),
    )


async def test_requests_signed_by_the_package_are_accepted(
    live_server: LiveServer, sky: PartnerInfo, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ed = await register_key(sessions, live_server.master_key, sky)
    mac = await register_key(sessions, live_server.master_key, sky, "hmac-sha256")
    enrolled = send(
        live_server, "POST", "/v1/members", ed.key_id, ed.key, json={"member_ref": "alice"}
    )
    assert enrolled.status_code == 201, enrolled.text
    [request_signature] = enrolled.request.headers["signature-input"].split(", ")
    assert request_signature.startswith(
        'partner=("@method" "@path" "idempotency-key" "content-digest");created='
    )
    assert f';keyid="{ed.key_id}";alg="ed25519";nonce="' in request_signature

    issued = send(
        live_server,
        "POST",
        "/v1/issuances",
        ed.key_id,
        ed.key,
        json={"member_ref": "alice", "points": 250},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["balances"][0]["balance"] == 250
    assert await ledger_size(sessions) == (1, 2)

    redeemed = send(
        live_server,
        "POST",
        "/v1/redemptions",
        mac.key_id,
        mac.key,
        json={"member_ref": "alice", "points": 50},
    )
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["balances"][0]["balance"] == 200
    assert await ledger_size(sessions) == (2, 4)

    page = send(
        live_server, "GET", "/v1/members/alice/transactions", ed.key_id, ed.key, params={"limit": 1}
    )
    assert page.status_code == 200, page.text
    assert '"@query"' in page.request.headers["signature-input"]
    assert [item["amount"] for item in page.json()["items"]] == [-50]
    member = send(live_server, "GET", "/v1/members/alice", mac.key_id, mac.key)
    assert (member.status_code, member.json()["balance"]) == (200, 200)

    for answer in (enrolled, issued, redeemed, page, member):
        assert [r.parameters["keyid"] for r in package_verifies(live_server, answer)] == [
            next(iter(live_server.exchange_keys))
        ]


async def test_what_the_package_signs_differently_is_refused(
    live_server: LiveServer, sky: PartnerInfo, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The package's defaults (``@method @authority @target-uri``, no nonce) are valid RFC 9421
    but not our policy: the same 401 as any other failure, and nothing posted. A nonce the
    package is told to use twice is a replay."""
    ed = await register_key(sessions, live_server.master_key, sky)
    assert (
        send(
            live_server, "POST", "/v1/members", ed.key_id, ed.key, json={"member_ref": "alice"}
        ).status_code
        == 201
    )
    issue = {"member_ref": "alice", "points": 5}
    defaults = send(
        live_server,
        "POST",
        "/v1/issuances",
        ed.key_id,
        ed.key,
        json=issue,
        components=["@method", "@authority", "@target-uri"],
    )
    assert defaults.status_code == 401
    assert defaults.json()["type"] == PROBLEMS + "signature-invalid"
    first = send(live_server, "POST", "/v1/issuances", ed.key_id, ed.key, json=issue, nonce="n-1")
    replay = send(live_server, "POST", "/v1/issuances", ed.key_id, ed.key, json=issue, nonce="n-1")
    assert (first.status_code, replay.status_code) == (201, 401)
    assert replay.content == defaults.content
    assert await ledger_size(sessions) == (1, 2)
    package_verifies(live_server, defaults)  # refusals are signed as well


async def test_the_rfc_9421_b26_key_as_a_brand_key(
    live_server: LiveServer, sky: PartnerInfo, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """First the package reproduces the published B.2.6 signature with the key (so the key and
    the package are what the RFC says), and our signature base for that message is the RFC's;
    then the key is registered as Sky's ed25519 key and requests the package signs with it are
    accepted."""
    private = Ed25519PrivateKey.from_private_bytes(_b64url(RFC_D))
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw_public == _b64url(RFC_X)

    vector = httpx.Request(
        "POST",
        "https://example.com/foo?param=Value&Pet=dog",
        headers={
            "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
            "Content-Type": "application/json",
            "Content-Length": "18",
        },
        content=b'{"hello": "world"}',
    )
    components = ["date", "@method", "@path", "@authority", "content-type", "content-length"]
    hms.HTTPMessageSigner(
        signature_algorithm=hms.algorithms.ED25519,
        key_resolver=hms.MappingKeyResolver(
            public_keys={}, private_keys={"test-key-ed25519": private}
        ),
    ).sign(
        vector,
        key_id="test-key-ed25519",
        created=dt.datetime.fromtimestamp(1618884473, dt.UTC),
        label="sig-b26",
        include_alg=False,
        covered_component_ids=components,
    )
    assert vector.headers["signature-input"] == B26_INPUT
    assert vector.headers["signature"] == B26_SIGNATURE
    ours = signature_base(
        components,
        B26_INPUT.removeprefix("sig-b26="),
        method="POST",
        path="/foo",
        query="param=Value&Pet=dog",
        authority="example.com",
        headers=vector.headers,
    )
    private.public_key().verify(base64.b64decode(B26_SIGNATURE.split(":")[1]), ours)

    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with sessions() as session, session.begin():
        new = await add_key(
            session,
            partner_id=sky.id,
            alg="ed25519",
            master_key=live_server.master_key,
            public_key_pem=pem,
        )
    me = send(live_server, "GET", "/v1/partners/me", new.key_id, private)
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["currency"]) == (str(sky.id), "SKY")
    assert (
        send(
            live_server, "POST", "/v1/members", new.key_id, private, json={"member_ref": "rfc"}
        ).status_code
        == 201
    )
    issued = send(
        live_server,
        "POST",
        "/v1/issuances",
        new.key_id,
        private,
        json={"member_ref": "rfc", "points": 9421},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["balances"] == [
        {"member_ref": "rfc", "balance": 9421, "held": 0, "available": 9421}
    ]
    assert await ledger_size(sessions) == (1, 2)


async def test_the_package_verifies_our_answers(
    live_server: LiveServer, sky: PartnerInfo, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The exchange's answer signature (``@status``, ``content-digest``) verifies with the
    package, for a 201, an unsigned endpoint's 200, a 404 and a 401; a byte of the body or
    the status changed, and it does not."""
    ed = await register_key(sessions, live_server.master_key, sky)
    created = send(live_server, "POST", "/v1/members", ed.key_id, ed.key, json={"member_ref": "a"})
    missing = send(live_server, "GET", "/v1/members/nobody", ed.key_id, ed.key)
    with httpx.Client(base_url=live_server.base_url) as client:
        keys = client.get("/v1/keys")
        unsigned = client.post("/v1/issuances", json={"member_ref": "a", "points": 1})
    assert [r.status_code for r in (created, keys, missing, unsigned)] == [201, 200, 404, 401]
    for response in (created, keys, missing, unsigned):
        [result] = package_verifies(live_server, response)
        assert result.label == "exchange"
        assert result.parameters["alg"] == "ed25519"
        assert list(result.covered_components)[:2] == ['"@status"', '"content-digest"']
        assert result.body == response.content

    body = bytearray(created.content)
    body[body.index(b"a")] = ord(b"b")
    altered_body = httpx.Response(
        201, headers=created.headers, content=bytes(body), request=created.request
    )
    with pytest.raises(hms.InvalidSignature):
        package_verifies(live_server, altered_body)
    altered_status = httpx.Response(
        200, headers=created.headers, content=created.content, request=created.request
    )
    with pytest.raises(hms.InvalidSignature):
        package_verifies(live_server, altered_status)
