"""``POST /v1/batches``: many operations in one signed request, each with its own outcome and its
own idempotency key.

The worked example: Sky Air posts, in one batch, 1 000 SKY to Alice and 500 to Bob, a redemption
of 300 of Alice's, a transfer of 200 from Alice to Bob, a redemption of 800 of Bob's (he has 700:
refused, 422), an issue to a member Sky never enrolled (404) and a transfer of 100 from Bob to
Carol. Alice ends with 500, Bob with 600, Carol with 100, and Sky owes 1 200 outstanding points."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.operations import issue
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from exchange.signing import verify_document
from tests.integration.conftest import Partners, SignedApi

PROBLEMS = "https://exchange.example/problems/"
Sessions = async_sessionmaker[AsyncSession]


def op(type_: str, key: str, points: Any, *refs: str, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "idempotency_key": key, "points": points, **more}
    if type_ == "transfer":
        body["from_member_ref"], body["to_member_ref"] = refs
    else:
        (body["member_ref"],) = refs
    return body


async def enrol(sessions: Sessions, brand: PartnerInfo, *refs: str) -> None:
    async with sessions() as session, session.begin():
        for ref in refs:
            await enrol_member(session, brand, ref)


async def balance_of(api: SignedApi, partners: Partners, ref: str) -> tuple[int, int, int]:
    body = (await api.get(f"/v1/members/{ref}", as_=partners.sky)).json()
    return body["balance"], body["held"], body["available"]


def receipt_verifies(api: SignedApi, answer: dict[str, Any]) -> bool:
    document = {name: value for name, value in answer.items() if name != "receipt"}
    return verify_document(
        document, answer["receipt"], api.exchange_keys[answer["receipt"]["key_id"]]
    )


async def ledger_ok(sessions: Sessions) -> None:
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def test_worked_example(api: SignedApi, partners: Partners, sessions: Sessions) -> None:
    await enrol(sessions, partners.sky.partner, "alice", "bob", "carol")
    operations = [
        op("issue", "i-alice", 1000, "alice", reference="Flug LH1 ✈ München"),
        op("issue", "i-bob", 500, "bob"),
        op("redeem", "r-alice", 300, "alice"),
        op("transfer", "t-alice-bob", 200, "alice", "bob"),
        op("redeem", "r-bob", 800, "bob"),
        op("issue", "i-ghost", 5, "ghost"),
        op("transfer", "t-bob-carol", 100, "bob", "carol"),
    ]
    answer = await api.post("/v1/batches", {"operations": operations}, as_=partners.sky)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == [201, 201, 201, 201, 422, 404, 201]
    assert [r["index"] for r in body["results"]] == list(range(7))
    assert [r["idempotency_key"] for r in body["results"]] == [
        o["idempotency_key"] for o in operations
    ]
    assert (body["posted"], body["replayed"], body["refused"]) == (5, 0, 2)
    assert receipt_verifies(api, body)

    short, ghost = body["results"][4]["problem"], body["results"][5]["problem"]
    assert short["type"] == PROBLEMS + "insufficient-points"
    assert (short["status"], short["member_ref"], short["available"], short["requested"]) == (
        422, "bob", 700, 800,
    )  # fmt: skip
    assert ghost["type"] == PROBLEMS + "member-not-found"
    assert (ghost["status"], ghost["member_ref"]) == (404, "ghost")
    assert "transaction" not in body["results"][4]

    results = body["results"]
    assert results[0]["transaction"]["reference"] == "Flug LH1 ✈ München"
    lines = {
        (p["account"], p["member_ref"], p["amount"], p["balance_after"], p["seq"])
        for p in results[3]["transaction"]["postings"]
    }
    assert lines == {("member", "alice", -200, 500, 3), ("member", "bob", 200, 700, 2)}
    assert results[3]["balances"] == [
        {"member_ref": "alice", "balance": 500, "held": 0, "available": 500},
        {"member_ref": "bob", "balance": 700, "held": 0, "available": 700},
    ]
    # What the batch answers is what the ledger holds, receipt and all.
    for result in (r for r in results if r["status"] == 201):
        one = await api.get(f"/v1/transactions/{result['transaction']['id']}", as_=partners.sky)
        assert one.json()["transaction"] == result["transaction"]

    assert await balance_of(api, partners, "alice") == (500, 0, 500)
    assert await balance_of(api, partners, "bob") == (600, 0, 600)
    assert await balance_of(api, partners, "carol") == (100, 0, 100)
    assert await api.ledger_size() == (5, 10)
    await ledger_ok(sessions)


async def test_a_refused_item_leaves_the_ledger_to_the_next_as_if_it_had_not_been(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    await enrol(sessions, partners.sky.partner, "alice")
    operations = [
        op("issue", "a", 100, "alice"),
        op("redeem", "b", 150, "alice"),
        op("redeem", "c", 100, "alice"),
        op("redeem", "d", 1, "alice"),
    ]
    body = (await api.post("/v1/batches", {"operations": operations}, as_=partners.sky)).json()
    assert [r["status"] for r in body["results"]] == [201, 422, 201, 422]
    assert body["results"][3]["problem"]["available"] == 0
    assert await balance_of(api, partners, "alice") == (0, 0, 0)
    await ledger_ok(sessions)


async def test_the_same_request_replays_the_whole_answer(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    await enrol(sessions, partners.sky.partner, "alice")
    batch = {"operations": [op("issue", "a", 100, "alice"), op("issue", "b", 5, "alice")]}
    first = await api.post("/v1/batches", batch, as_=partners.sky, idempotency_key="batch-1")
    size = await api.ledger_size()
    again = await api.post("/v1/batches", batch, as_=partners.sky, idempotency_key="batch-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await api.ledger_size() == size == (2, 4)
    other = {"operations": [op("issue", "c", 100, "alice")]}
    conflict = await api.post("/v1/batches", other, as_=partners.sky, idempotency_key="batch-1")
    assert conflict.status_code == 422
    assert conflict.json()["type"] == PROBLEMS + "idempotency-conflict"


async def test_a_new_batch_replays_the_items_it_repeats_and_posts_the_rest(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    await enrol(sessions, partners.sky.partner, "alice", "bob")
    first = await api.post(
        "/v1/batches",
        {
            "operations": [
                op("issue", "k1", 100, "alice"),
                op("transfer", "k2", 40, "alice", "bob"),
                op("redeem", "k3", 1000, "alice"),  # refused: its key names no transaction
            ]
        },
        as_=partners.sky,
    )
    posted = first.json()["results"]
    second = await api.post(
        "/v1/batches",
        {
            "operations": [
                op("issue", "k4", 7, "bob"),
                op("transfer", "k2", 40, "alice", "bob"),
                op("issue", "k1", 100, "alice"),
                op("redeem", "k3", 10, "alice"),
                op("issue", "k5", 9, "alice"),
            ]
        },
        as_=partners.sky,
    )
    assert second.status_code == 200
    body = second.json()
    results = body["results"]
    assert [(r["status"], r.get("replayed", False)) for r in results] == [
        (201, False), (201, True), (201, True), (201, False), (201, False),
    ]  # fmt: skip
    assert (body["posted"], body["replayed"], body["refused"]) == (3, 2, 0)
    assert results[1]["transaction"] == posted[1]["transaction"]
    assert results[2]["transaction"] == posted[0]["transaction"]
    assert "balances" not in results[1]
    assert receipt_verifies(api, body)
    assert await balance_of(api, partners, "alice") == (100 - 40 - 10 + 9, 0, 59)
    assert await balance_of(api, partners, "bob") == (47, 0, 47)
    assert await api.ledger_size() == (5, 10)

    # A used key asking for something else is refused on its own.
    third = await api.post(
        "/v1/batches",
        {"operations": [op("issue", "k1", 101, "alice"), op("issue", "k6", 1, "alice")]},
        as_=partners.sky,
    )
    conflict, fresh = third.json()["results"]
    assert conflict["status"] == 422
    assert conflict["problem"]["type"] == PROBLEMS + "idempotency-conflict"
    assert conflict["problem"]["transaction_id"] == posted[0]["transaction"]["id"]
    assert fresh["status"] == 201
    await ledger_ok(sessions)


async def test_a_repeated_item_is_replayed_even_if_it_would_now_be_refused(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    """Alice is given 100 and redeems them (k2). A later batch repeats k2: replayed, not refused
    for want of points; and a refused item under a new key stays refused beside it."""
    await enrol(sessions, partners.sky.partner, "alice")
    first = await api.post(
        "/v1/batches",
        {"operations": [op("issue", "k1", 100, "alice"), op("redeem", "k2", 100, "alice")]},
        as_=partners.sky,
    )
    redeemed = first.json()["results"][1]["transaction"]
    for operations in (
        [op("redeem", "k2", 100, "alice")],
        [op("redeem", "k3", 5, "alice"), op("redeem", "k2", 100, "alice")],
    ):
        answer = await api.post("/v1/batches", {"operations": operations}, as_=partners.sky)
        results = answer.json()["results"]
        assert results[-1]["status"] == 201 and results[-1]["replayed"] is True
        assert results[-1]["transaction"] == redeemed
        if len(results) == 2:
            assert results[0]["status"] == 422
            assert results[0]["problem"]["type"] == PROBLEMS + "insufficient-points"
    assert await balance_of(api, partners, "alice") == (0, 0, 0)
    assert await api.ledger_size() == (2, 4)
    await ledger_ok(sessions)


async def test_item_keys_are_the_partners_own_and_not_request_keys(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    await enrol(sessions, partners.sky.partner, "alice")
    await enrol(sessions, partners.htl.partner, "alice")
    single = await api.post(
        "/v1/issuances",
        {"member_ref": "alice", "points": 10},
        as_=partners.sky,
        idempotency_key="x",
    )
    assert single.status_code == 201
    batch = {"operations": [op("issue", "x", 10, "alice")]}
    sky = (await api.post("/v1/batches", batch, as_=partners.sky)).json()["results"][0]
    htl = (await api.post("/v1/batches", batch, as_=partners.htl)).json()["results"][0]
    assert (sky["status"], sky.get("replayed"), htl["status"], htl.get("replayed")) == (
        201, None, 201, None,
    )  # fmt: skip
    assert sky["transaction"]["id"] != single.json()["transaction"]["id"]
    assert await balance_of(api, partners, "alice") == (20, 0, 20)


async def test_a_thousand_operations_in_one_request(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    refs = [f"member-{n:03d}" for n in range(100)]
    await enrol(sessions, partners.sky.partner, *refs)
    operations = [
        op("issue", str(uuid.uuid4()), n + 1, refs[n % 100], reference=f"order {n}")
        for n in range(1000)
    ]
    answer = await api.post("/v1/batches", {"operations": operations}, as_=partners.sky)
    assert answer.status_code == 200, answer.text[:500]
    body = answer.json()
    assert body["posted"] == 1000
    assert {r["status"] for r in body["results"]} == {201}
    assert receipt_verifies(api, body)
    assert await api.ledger_size() == (1000, 2000)
    # member-000 got 1, 101, 201, ... 901: ten issues.
    assert await balance_of(api, partners, "member-000") == (4510, 0, 4510)
    await ledger_ok(sessions)

    # 999 of them again, with one new operation in the middle: the 999 are replayed (the
    # batch's first write meets the item-key index), the new one posts.
    again = [*operations[:500], op("issue", "new", 7, refs[0]), *operations[500:999]]
    replay = await api.post("/v1/batches", {"operations": again}, as_=partners.sky)
    assert replay.status_code == 200, replay.text[:500]
    results = replay.json()["results"]
    assert (replay.json()["posted"], replay.json()["replayed"]) == (1, 999)
    assert results[700]["transaction"] == body["results"][699]["transaction"]
    assert await api.ledger_size() == (1001, 2002)
    assert await balance_of(api, partners, "member-000") == (4517, 0, 4517)

    too_many = [*operations, op("issue", "one-more", 1, refs[0])]
    refused = await api.post("/v1/batches", {"operations": too_many}, as_=partners.sky)
    assert refused.status_code == 422
    assert await api.ledger_size() == (1001, 2002)


WHOLLY_WRONG = {
    "no operations": ([], "invalid-request"),
    "a repeated item key": (
        [op("issue", "a", 1, "alice"), op("issue", "a", 2, "alice")],
        "invalid-input",
    ),
    "zero points": (
        [op("issue", "a", 1, "alice"), op("issue", "b", 0, "alice")],
        "invalid-request",
    ),
    "fractional points": ([op("issue", "b", 1.5, "alice")], "invalid-request"),
    "points as a string": ([op("issue", "b", "10", "alice")], "invalid-request"),
    "too many points": ([op("issue", "b", 10**13, "alice")], "invalid-request"),
    "points as a bool": ([op("issue", "b", True, "alice")], "invalid-request"),
    "an unknown type": ([op("burn", "b", 1, "alice")], "invalid-request"),
    "no type": ([{"idempotency_key": "b", "points": 1, "member_ref": "alice"}], "invalid-request"),
    "an unknown field": ([op("issue", "b", 1, "alice", refrence="x")], "invalid-request"),
    "an empty key": ([op("issue", "", 1, "alice")], "invalid-request"),
    "a key with a space": ([op("issue", "a b", 1, "alice")], "invalid-request"),
    "a transfer to oneself": ([op("transfer", "t", 1, "alice", "alice")], "invalid-input"),
    "a member ref with a slash": ([op("issue", "a", 1, "al/ice")], "invalid-input"),
    "a member ref with an outer space": (
        [op("issue", "a", 1, "alice"), op("redeem", "b", 1, " bob")],
        "invalid-input",
    ),
}


@pytest.mark.parametrize(
    ("operations", "slug"),
    [pytest.param(*case, id=name) for name, case in WHOLLY_WRONG.items()],
)
async def test_a_batch_wrong_as_a_whole_posts_nothing(
    api: SignedApi,
    partners: Partners,
    sessions: Sessions,
    operations: list[dict[str, Any]],
    slug: str,
) -> None:
    await enrol(sessions, partners.sky.partner, "alice", "bob")
    before = await api.ledger_size()
    answer = await api.post("/v1/batches", {"operations": operations}, as_=partners.sky)
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"] == PROBLEMS + slug
    assert await api.ledger_size() == before


async def test_only_a_brand_posts_batches(api: SignedApi, partners: Partners) -> None:
    batch = {"operations": [op("issue", "a", 1, "alice")]}
    answer = await api.post("/v1/batches", batch, as_=partners.operator)
    assert answer.status_code == 403
    assert answer.json()["type"] == PROBLEMS + "not-a-brand"


async def test_the_operation_is_documented(api: SignedApi) -> None:
    spec = (await api.client.get("/docs/openapi.json")).json()
    operation = spec["paths"]["/v1/batches"]["post"]
    assert operation["operationId"] == "createBatch"
    assert operation["summary"]
    assert {"200", "400", "401", "403", "409", "413", "422", "500"} <= set(operation["responses"])


@pytest.mark.postgres_only
async def test_concurrent_batches_sharing_item_keys_post_each_key_once(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    refs = [f"m{n}" for n in range(20)]
    await enrol(sessions, partners.sky.partner, *refs)
    async with sessions() as session, session.begin():
        for ref in refs:
            await issue(session, partners.sky.partner, ref, 1000)
    shared = [op("redeem", f"shared-{n}", 10, refs[n % 20]) for n in range(200)]

    def batch(name: str) -> dict[str, Any]:
        own = [op("issue", f"{name}-{n}", 1, refs[n % 20]) for n in range(100)]
        return {"operations": [*own[:50], *shared, *own[50:]]}

    answers = await asyncio.gather(
        *(api.post("/v1/batches", batch(f"b{n}"), as_=partners.sky) for n in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
    bodies = [a.json() for a in answers]
    assert sum(b["posted"] for b in bodies) == 4 * 100 + 200
    assert sum(b["replayed"] for b in bodies) == 3 * 200
    ids = {
        r["idempotency_key"]: r["transaction"]["id"] for r in bodies[0]["results"]
    }  # every batch answers each shared key with the one transaction
    for body in bodies[1:]:
        for result in body["results"]:
            if result["idempotency_key"].startswith("shared-"):
                assert result["transaction"]["id"] == ids[result["idempotency_key"]]
    async with sessions() as session:
        counted = await session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.idempotency_key.like("shared-%"))
        )
    assert counted == 200
    # 1 000 each, 4 x 5 = 20 points issued per member, 10 x 10 = 100 redeemed.
    assert await balance_of(api, partners, "m0") == (920, 0, 920)
    await ledger_ok(sessions)
