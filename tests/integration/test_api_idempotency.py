"""Idempotency-Key: replay, conflict, in flight, scope, and what is (not) recorded."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.http.idempotency import purge_expired_records
from exchange.http.signatures import purge_expired_nonces
from exchange.settings import Settings
from partners.models import IdempotencyRecord, SignatureNonce
from tests.integration.conftest import Partners, SignedApi

PROBLEMS = "https://exchange.example/problems/"
ISSUE = {"member_ref": "alice", "points": 100}


@pytest.fixture
async def alice(api: SignedApi, partners: Partners) -> Partners:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    return partners


async def records(sessions: async_sessionmaker[AsyncSession]) -> list[IdempotencyRecord]:
    async with sessions() as session:
        return list((await session.scalars(select(IdempotencyRecord))).all())


async def test_a_retry_replays_the_first_answer_and_posts_once(
    api: SignedApi, alice: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = await api.ledger_size()
    first = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="order-1")
    assert first.status_code == 201
    posted = await api.ledger_size()
    assert posted == (before[0] + 1, before[1] + 2)
    retry = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="order-1")
    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert await api.ledger_size() == posted
    (record,) = [r for r in await records(sessions) if r.key == "order-1"]
    assert record.response_body == first.content
    assert record.response_status == 201
    assert record.partner_id == alice.sky.partner.id
    assert record.expires_at - record.created_at == dt.timedelta(hours=24)
    # The ledger keeps the key with the transaction.
    shown = await api.get(f"/v1/transactions/{first.json()['transaction']['id']}", as_=alice.sky)
    assert shown.status_code == 200


async def test_a_structured_string_and_a_bare_token_are_the_same_key(
    api: SignedApi, alice: Partners
) -> None:
    first = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key='"abc-1"')
    again = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="abc-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    uuid_key = "0e2f5c4a-1b7d-4c1e-9a55-3f0d6f1e2a9b"  # starts with a digit: not an sf token
    by_uuid = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key=uuid_key)
    assert by_uuid.status_code == 201


async def test_the_same_key_for_another_request_is_a_conflict(
    api: SignedApi, alice: Partners
) -> None:
    first = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="k")
    assert first.status_code == 201
    before = await api.ledger_size()
    other_body = await api.post(
        "/v1/issuances", {"member_ref": "alice", "points": 101}, as_=alice.sky, idempotency_key="k"
    )
    other_path = await api.post("/v1/redemptions", ISSUE, as_=alice.sky, idempotency_key="k")
    for answer in (other_body, other_path):
        assert answer.status_code == 422
        assert answer.json()["type"] == PROBLEMS + "idempotency-conflict"
        assert answer.json()["title"] == "This Idempotency-Key was used for a different request"
    assert await api.ledger_size() == before


@pytest.mark.parametrize(
    ("key", "slug"),
    [
        (None, "idempotency-key-missing"),
        ("", "idempotency-key-missing"),
        ("x" * 256, "idempotency-key-invalid"),
        ('"' + "x" * 256 + '"', "idempotency-key-invalid"),
        ("two words", "idempotency-key-invalid"),
        ('""', "idempotency-key-invalid"),
        ('"unterminated', "idempotency-key-invalid"),
    ],
    ids=["absent", "empty", "256 chars", "256 chars quoted", "space", "empty string", "bad sf"],
)
async def test_a_post_needs_a_valid_key(
    api: SignedApi, alice: Partners, key: str | None, slug: str
) -> None:
    before = await api.ledger_size()
    answer = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key=key)
    assert answer.status_code == 400
    assert answer.json()["type"] == PROBLEMS + slug
    assert await api.ledger_size() == before


async def test_the_longest_key_is_accepted(api: SignedApi, alice: Partners) -> None:
    answer = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="x" * 255)
    assert answer.status_code == 201


async def test_keys_are_scoped_to_the_partner(api: SignedApi, alice: Partners) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=alice.htl)
    before = await api.ledger_size()
    sky = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="shared")
    htl = await api.post("/v1/issuances", ISSUE, as_=alice.htl, idempotency_key="shared")
    assert (sky.status_code, htl.status_code) == (201, 201)
    assert sky.json()["transaction"]["id"] != htl.json()["transaction"]["id"]
    assert await api.ledger_size() == (before[0] + 2, before[1] + 4)
    # Two keys of one partner share its key space.
    again = await api.post("/v1/issuances", ISSUE, as_=alice.sky_hmac, idempotency_key="shared")
    assert again.content == sky.content


async def test_a_failed_request_is_not_recorded_and_can_be_retried(
    api: SignedApi, alice: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    redeem = {"member_ref": "alice", "points": 50}
    short = await api.post("/v1/redemptions", redeem, as_=alice.sky, idempotency_key="r-1")
    assert short.status_code == 422
    assert short.json()["type"] == PROBLEMS + "insufficient-points"
    assert "r-1" not in {r.key for r in await records(sessions)}
    funded = await api.post("/v1/issuances", ISSUE, as_=alice.sky)
    assert funded.status_code == 201
    retried = await api.post("/v1/redemptions", redeem, as_=alice.sky, idempotency_key="r-1")
    assert retried.status_code == 201
    assert retried.json()["balances"][0]["available"] == 50
    replayed = await api.post("/v1/redemptions", redeem, as_=alice.sky, idempotency_key="r-1")
    assert replayed.content == retried.content


async def test_enrolment_replays_its_first_status(api: SignedApi, partners: Partners) -> None:
    zoe = {"member_ref": "zoe"}
    first = await api.post("/v1/members", zoe, as_=partners.sky, idempotency_key="e")
    replay = await api.post("/v1/members", zoe, as_=partners.sky, idempotency_key="e")
    fresh = await api.post("/v1/members", zoe, as_=partners.sky)
    assert (first.status_code, replay.status_code, fresh.status_code) == (201, 201, 200)


async def test_concurrent_requests_with_one_key_post_once(
    api: SignedApi, alice: Partners, settings: Settings
) -> None:
    before = await api.ledger_size()
    answers = await asyncio.gather(
        *(
            api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="burst")
            for _ in range(50)
        )
    )
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {201, 409}, statuses
    assert await api.ledger_size() == (before[0] + 1, before[1] + 2)
    bodies = {a.content for a in answers if a.status_code == 201}
    assert len(bodies) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["type"] == PROBLEMS + "idempotency-in-flight"
    if not settings.is_postgres:
        assert statuses == [201] * 50  # SQLite serialises writers: the rest simply replay
    member = await api.get("/v1/members/alice", as_=alice.sky)
    assert member.json()["balance"] == 100


async def test_expired_records_and_nonces_are_forgotten(
    api: SignedApi, alice: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="old")
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    async with sessions() as session, session.begin():
        await session.execute(update(IdempotencyRecord).values(expires_at=long_ago))
    # A record past its retention no longer answers for the key.
    again = await api.post("/v1/issuances", ISSUE, as_=alice.sky, idempotency_key="old")
    assert again.status_code == 201
    assert again.json()["transaction"]["id"] != first.json()["transaction"]["id"]

    async with sessions() as session, session.begin():
        await session.execute(update(IdempotencyRecord).values(expires_at=long_ago))
        await session.execute(update(SignatureNonce).values(expires_at=long_ago))
        conn = await session.connection()
        now = dt.datetime.now(dt.UTC)
        assert await purge_expired_records(conn, now) == 2  # the enrolment and "old"
        assert await purge_expired_nonces(conn, now) >= 3
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
        assert await session.scalar(select(func.count()).select_from(SignatureNonce)) == 0
