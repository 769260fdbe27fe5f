"""Group commit: concurrent single operations posted together, each with its own outcome."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.models import LedgerTransaction
from partners.models import IdempotencyRecord
from tests.integration.conftest import Partners, SignedApi

PROBLEMS = "https://exchange.example/problems/"


async def _enrol(api: SignedApi, partners: Partners, *refs: str) -> None:
    for ref in refs:
        answer = await api.post("/v1/members", {"member_ref": ref}, as_=partners.sky)
        assert answer.status_code == 201


async def _balance(api: SignedApi, partners: Partners, ref: str) -> int:
    answer = await api.get(f"/v1/members/{ref}", as_=partners.sky)
    balance: int = answer.json()["balance"]
    return balance


async def test_a_group_posts_exactly_the_operations_that_are_not_refused(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Alice has 500 points and ten redemptions of 100 arrive at once, beside issuances to Bob
    and a transfer from a member who does not exist: five redemptions post, five are refused
    for insufficient points, every issuance posts, the unknown member is refused alone."""
    await _enrol(api, partners, "alice", "bob")
    seeded = await api.post(
        "/v1/issuances", {"member_ref": "alice", "points": 500}, as_=partners.sky
    )
    assert seeded.status_code == 201
    before = await api.ledger_size()
    requests = [
        *(("/v1/redemptions", {"member_ref": "alice", "points": 100}) for _ in range(10)),
        *(("/v1/issuances", {"member_ref": "bob", "points": 7}) for _ in range(6)),
        ("/v1/transfers", {"from_member_ref": "nobody", "to_member_ref": "bob", "points": 1}),
    ]
    answers = await asyncio.gather(
        *(api.post(path, body, as_=partners.sky) for path, body in requests)
    )
    redemptions, issuances, (transfer,) = answers[:10], answers[10:16], answers[16:]
    assert sorted(a.status_code for a in redemptions) == [201] * 5 + [422] * 5
    for refused in (a for a in redemptions if a.status_code == 422):
        assert refused.json()["type"] == PROBLEMS + "insufficient-points"
    assert [a.status_code for a in issuances] == [201] * 6
    assert transfer.status_code == 404
    assert transfer.json()["type"] == PROBLEMS + "member-not-found"
    # Exactly the eleven answered 201 were posted (two postings each), nothing else.
    assert await api.ledger_size() == (before[0] + 11, before[1] + 22)
    assert await _balance(api, partners, "alice") == 0
    assert await _balance(api, partners, "bob") == 42
    # Each posted answer is the transaction the ledger holds, and was recorded under its key.
    async with sessions() as session:
        recorded = {
            r.response_body for r in (await session.scalars(select(IdempotencyRecord))).all()
        }
    for answer in (a for a in answers if a.status_code == 201):
        assert answer.content in recorded
        shown = await api.get(
            f"/v1/transactions/{answer.json()['transaction']['id']}", as_=partners.sky
        )
        assert shown.json()["transaction"] == answer.json()["transaction"]


async def test_concurrent_requests_share_transactions_of_the_database(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Requests that arrive together are posted by fewer database transactions than there are
    requests: the transactions of one group are stamped with one time (read once, under the
    group's locks)."""
    await _enrol(api, partners, *(f"m{i}" for i in range(20)))
    answers = await asyncio.gather(
        *(
            api.post("/v1/issuances", {"member_ref": f"m{i}", "points": 10}, as_=partners.sky)
            for i in range(20)
        )
    )
    assert [a.status_code for a in answers] == [201] * 20
    ids = [uuid.UUID(a.json()["transaction"]["id"]) for a in answers]
    async with sessions() as session:
        stamps = await session.scalar(
            select(func.count(func.distinct(LedgerTransaction.created_at))).where(
                LedgerTransaction.id.in_(ids)
            )
        )
    assert stamps is not None and stamps < 20


async def test_an_answer_lost_after_the_commit_is_replayed_by_the_retry(
    api: SignedApi, partners: Partners
) -> None:
    """A client that hangs up while its group is being written does not undo the group: its
    operation posts once, and the retry with the same Idempotency-Key replays the answer."""
    await _enrol(api, partners, "carol")
    before = await api.ledger_size()
    body = {"member_ref": "carol", "points": 25}
    hung_up = asyncio.create_task(
        api.post("/v1/issuances", body, as_=partners.sky, idempotency_key="lost-answer")
    )
    others = [
        asyncio.create_task(api.post("/v1/issuances", body, as_=partners.sky)) for _ in range(5)
    ]
    await asyncio.sleep(0)
    hung_up.cancel()
    await asyncio.gather(*others)
    retry = await api.post("/v1/issuances", body, as_=partners.sky, idempotency_key="lost-answer")
    assert retry.status_code == 201
    # Six issuances in all: the five others and the one whose answer was lost, once.
    assert await api.ledger_size() == (before[0] + 6, before[1] + 12)
    assert await _balance(api, partners, "carol") == 150
    again = await api.post("/v1/issuances", body, as_=partners.sky, idempotency_key="lost-answer")
    assert again.content == retry.content
    assert again.headers["idempotent-replayed"] == "true"
