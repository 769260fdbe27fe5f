"""Every way a request signature can fail gives the same 401, byte for byte, and posts nothing."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.models import Account, Member
from partners.httpsig import content_digest, sign_request
from partners.service import revoke_key
from tests.integration.conftest import Credentials, Partners, SignedApi, custom_signature

REFUSAL = (
    b'{"type":"https://exchange.example/problems/signature-invalid",'
    b'"title":"Request signature verification failed","status":401}'
)
ISSUE = {"member_ref": "alice", "points": 100}
ISSUE_BODY = b'{"member_ref": "alice", "points": 100}'

Attempt = Callable[[SignedApi, Partners], Awaitable[httpx.Response]]


def _custom(
    components: list[str],
    params: dict[str, object],
    *,
    credentials: Callable[[Partners], Credentials] = lambda p: p.sky,
    cover_idempotency_key: bool = True,
) -> Attempt:
    """An issuance signed with exactly these components (and ``idempotency-key``, unless told
    not to) and parameters."""
    if cover_idempotency_key:
        components = [*components, "idempotency-key"]

    async def attempt(api: SignedApi, partners: Partners) -> httpx.Response:
        signer = credentials(partners)
        headers = {
            "Content-Type": "application/json",
            "Content-Digest": content_digest(ISSUE_BODY),
            "Idempotency-Key": secrets.token_hex(8),
        }
        given = {"keyid": signer.key_id, "created": int(time.time()), **params}
        headers.update(
            custom_signature(
                signer,
                method="POST",
                path="/v1/issuances",
                headers=headers,
                components=components,
                params={name: value for name, value in given.items() if value is not None},
            )
        )
        return await api.post("/v1/issuances", body=ISSUE_BODY, as_=None, headers=headers)

    return attempt


def _signed(
    *, created_in: int | None = None, expires_in: int | None = None, **options: object
) -> Attempt:
    """An issuance signed by the SDK's rules, with ``created``/``expires`` this many seconds
    from the moment it is sent."""

    async def attempt(api: SignedApi, partners: Partners) -> httpx.Response:
        now = int(time.time())
        if created_in is not None:
            options["created"] = now + created_in
        if expires_in is not None:
            options["expires"] = now + expires_in
        return await api.post("/v1/issuances", ISSUE, as_=partners.sky, **options)  # type: ignore[arg-type]

    return attempt


async def _unsigned(api: SignedApi, partners: Partners) -> httpx.Response:
    return await api.post("/v1/issuances", ISSUE, as_=None)


async def _unknown_key(api: SignedApi, partners: Partners) -> httpx.Response:
    stranger = Credentials(
        partners.sky.partner, "0badc0de-1234567890abcdef", "ed25519", Ed25519PrivateKey.generate()
    )
    return await api.post("/v1/issuances", ISSUE, as_=stranger)


async def _wrong_secret(api: SignedApi, partners: Partners) -> httpx.Response:
    hmac_key_id = partners.sky_hmac.key_id
    guess = Credentials(partners.sky.partner, hmac_key_id, "hmac-sha256", os.urandom(32))
    return await api.post("/v1/issuances", ISSUE, as_=guess)


async def _another_partners_key(api: SignedApi, partners: Partners) -> httpx.Response:
    # Hotel Co's private key claiming to be Sky's key id.
    forged = Credentials(partners.sky.partner, partners.sky.key_id, "ed25519", partners.htl.key)
    return await api.post("/v1/issuances", ISSUE, as_=forged)


def _tamper_signature(headers: dict[str, str]) -> None:
    headers["Signature"] = "sig1=:" + base64.b64encode(bytes(64)).decode() + ":"


def _drop(*names: str) -> Callable[[dict[str, str]], None]:
    def drop(headers: dict[str, str]) -> None:
        for name in names:
            del headers[name]

    return drop


def _signed_for(
    partners: Partners, method: str, path: str, query: str, body: bytes
) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if body else {}
    headers.update(
        sign_request(
            method=method, path=path, query=query, authority=None, headers=headers, body=body,
            key_id=partners.sky.key_id, alg="ed25519", key=partners.sky.key,
            created=int(time.time()), nonce=os.urandom(8).hex(),
        )
    )  # fmt: skip
    return headers


async def _other_path(api: SignedApi, partners: Partners) -> httpx.Response:
    headers = _signed_for(partners, "POST", "/v1/redemptions", "", ISSUE_BODY)
    return await api.post("/v1/issuances", body=ISSUE_BODY, as_=None, headers=headers)


async def _other_method(api: SignedApi, partners: Partners) -> httpx.Response:
    headers = _signed_for(partners, "PUT", "/v1/issuances", "", ISSUE_BODY)
    return await api.post("/v1/issuances", body=ISSUE_BODY, as_=None, headers=headers)


ATTEMPTS: dict[str, Attempt] = {
    "no signature": _unsigned,
    "signature headers dropped": _signed(tamper=_drop("Signature")),
    "bad signature": _signed(tamper=_tamper_signature),
    "unknown key": _unknown_key,
    "wrong hmac secret": _wrong_secret,
    "another partner's private key": _another_partners_key,
    "stale created": _signed(created_in=-301),
    "future created": _signed(created_in=31 + 5),
    "expired": _signed(expires_in=-1),
    "body changed after signing": _signed(send_body=b'{"member_ref": "alice", "points": 999}'),
    "content-digest header dropped": _signed(tamper=_drop("Content-Digest")),
    "missing nonce": _custom(["@method", "@path", "content-digest"], {"alg": "ed25519"}),
    "empty nonce": _custom(["@method", "@path", "content-digest"], {"nonce": ""}),
    "missing created": _custom(
        ["@method", "@path", "content-digest"], {"nonce": "n1", "created": None}
    ),
    "alg not the key's": _custom(
        ["@method", "@path", "content-digest"], {"alg": "hmac-sha256", "nonce": "n2"}
    ),
    "hmac key signed as ed25519": _custom(
        ["@method", "@path", "content-digest"],
        {"alg": "ed25519", "nonce": "n3"},
        credentials=lambda p: p.sky_hmac,
    ),
    "content-digest not covered": _custom(["@method", "@path"], {"nonce": "n4"}),
    "@method not covered": _custom(["@path", "content-digest"], {"nonce": "n5"}),
    "@path not covered": _custom(["@method", "content-digest"], {"nonce": "n6"}),
    "idempotency-key not covered": _custom(
        ["@method", "@path", "content-digest"], {"nonce": "n7"}, cover_idempotency_key=False
    ),
    "signed for another path": _other_path,
    "signed for another method": _other_method,
    "nonce too long": _signed(nonce="n" * 201),
}


@pytest.mark.parametrize("case", list(ATTEMPTS))
async def test_every_refusal_is_the_same_401_and_posts_nothing(
    api: SignedApi, partners: Partners, case: str
) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    before = await api.ledger_size()
    answer = await ATTEMPTS[case](api, partners)
    assert answer.status_code == 401, answer.text
    assert answer.content == REFUSAL
    assert answer.headers["content-type"] == "application/problem+json"
    assert await api.ledger_size() == before


async def test_the_signature_case_list_is_not_vacuous(api: SignedApi, partners: Partners) -> None:
    """The same helpers, used properly, are accepted (so each refusal above is for its cause)."""
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    ok = _custom(["@method", "@path", "content-digest"], {"nonce": "fine", "alg": "ed25519"})
    assert (await ok(api, partners)).status_code == 201
    assert (await _signed()(api, partners)).status_code == 201
    assert (await api.post("/v1/issuances", ISSUE, as_=partners.sky_hmac)).status_code == 201


async def test_revoked_key_is_refused(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    assert (await api.post("/v1/issuances", ISSUE, as_=partners.sky_hmac)).status_code == 201
    async with sessions() as session, session.begin():
        await revoke_key(session, partners.sky_hmac.key_id)
    before = await api.ledger_size()
    answer = await api.post("/v1/issuances", ISSUE, as_=partners.sky_hmac)
    assert (answer.status_code, answer.content) == (401, REFUSAL)
    assert await api.ledger_size() == before
    # The brand's other key keeps working: keys rotate one at a time.
    assert (await api.post("/v1/issuances", ISSUE, as_=partners.sky)).status_code == 201


async def test_a_replayed_request_is_refused_even_when_the_first_failed(
    api: SignedApi, partners: Partners
) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    fixed = {"nonce": "only-once", "created": int(time.time()), "idempotency_key": "k-1"}
    first = await api.post("/v1/issuances", ISSUE, as_=partners.sky, **fixed)  # type: ignore[arg-type]
    assert first.status_code == 201
    before = await api.ledger_size()
    replay = await api.post("/v1/issuances", ISSUE, as_=partners.sky, **fixed)  # type: ignore[arg-type]
    assert (replay.status_code, replay.content) == (401, REFUSAL)
    assert await api.ledger_size() == before

    refused = {"nonce": "fails-once", "created": int(time.time())}
    short = await api.post(
        "/v1/redemptions", {"member_ref": "alice", "points": 10**6}, as_=partners.sky, **refused
    )  # type: ignore[arg-type]
    assert short.status_code == 422
    again = await api.post(
        "/v1/redemptions", {"member_ref": "alice", "points": 10**6}, as_=partners.sky, **refused
    )  # type: ignore[arg-type]
    assert (again.status_code, again.content) == (401, REFUSAL)
    # A nonce belongs to one key: the brand's other key may use the same one.
    other = await api.post("/v1/issuances", ISSUE, as_=partners.sky_hmac, nonce="only-once")
    assert other.status_code == 201


@pytest.mark.postgres_only
async def test_a_replay_of_a_request_still_running_is_refused_at_once(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The nonce is on record before the handler runs. A replay sent while the first attempt
    waits (here on the member's row lock) is refused at once, rather than queued behind it with
    a connection held; and it cannot take the first attempt's place when that one then fails
    (were the nonce claimed with the request's own work, the replay would get it the moment the
    failure rolled back, and post)."""
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    fixed = {"nonce": "in-flight", "created": int(time.time()), "idempotency_key": "k-flight"}
    redeem = {"member_ref": "alice", "points": 100}
    alice = (
        select(Account.id)
        .join(Member, Member.id == Account.member_id)
        .where(Member.member_ref == "alice")
        .with_for_update()
    )
    before = await api.ledger_size()
    async with sessions() as blocker, blocker.begin():
        await blocker.execute(alice)
        first = asyncio.create_task(api.post("/v1/redemptions", redeem, as_=partners.sky, **fixed))  # type: ignore[arg-type]
        for _ in range(200):  # until the first attempt waits on the row lock
            waiting = await blocker.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the first attempt never waited on the member's lock"
        replay = await asyncio.wait_for(
            api.post("/v1/redemptions", redeem, as_=partners.sky, **fixed),  # type: ignore[arg-type]
            timeout=10,
        )
        assert (replay.status_code, replay.content) == (401, REFUSAL)
        assert not first.done()
    short = await first  # alice has no points: refused
    assert short.status_code == 422
    assert await api.ledger_size() == before


async def test_query_must_be_covered_when_present(api: SignedApi, partners: Partners) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    path = "/v1/members/alice/transactions"
    smuggled = await api.client.get(
        f"{path}?limit=1", headers=_signed_for(partners, "GET", path, "", b"")
    )
    api.check_signed(smuggled)
    assert (smuggled.status_code, smuggled.content) == (401, REFUSAL)
    other_query = await api.client.get(
        f"{path}?limit=1", headers=_signed_for(partners, "GET", path, "limit=2", b"")
    )
    assert (other_query.status_code, other_query.content) == (401, REFUSAL)
    covered = await api.get(path, as_=partners.sky, query="limit=1")
    assert covered.status_code == 200


async def test_unsigned_endpoints_need_no_signature_but_are_signed(api: SignedApi) -> None:
    for path in ("/health", "/ready", "/v1/keys"):
        answer = await api.get(path, as_=None)
        assert answer.status_code == 200, path
    docs = await api.client.get("/docs/openapi.json")
    assert docs.status_code == 200
    api.check_signed(docs)
