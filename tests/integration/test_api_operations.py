"""Every route of the signed API on its happy path, with the exact balances that follow.

The worked example: Sky Air enrols Alice and Bob, gives Alice 1 000 SKY, Alice redeems 300 and
sends Bob 200, holds 100 of which 60 are captured, holds 50 more and voids it, and Sky reverses
100 of the original 1 000: Alice ends with 340 SKY, Bob with 200, and Sky's issuance accounts
owe 540 outstanding points."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.verify import verify_ledger
from exchange.signing import verify_document
from tests.integration.conftest import Partners, SignedApi


def balances(answer: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {b["member_ref"]: (b["balance"], b["held"], b["available"]) for b in answer["balances"]}


def receipt_verifies(api: SignedApi, answer: dict[str, Any]) -> bool:
    public = api.exchange_keys[answer["receipt"]["key_id"]]
    return verify_document(answer["transaction"], answer["receipt"], public)


async def test_partners_me_for_each_kind_of_key(api: SignedApi, partners: Partners) -> None:
    for credentials in (partners.sky, partners.sky_hmac, partners.operator):
        answer = await api.get("/v1/partners/me", as_=credentials)
        assert answer.status_code == 200
        assert answer.json() == {
            "id": str(credentials.partner.id),
            "kind": credentials.partner.kind,
            "name": credentials.partner.name,
            "currency": credentials.partner.currency,
            "min_donation_points": None,
        }


async def test_enrol_is_201_then_200_with_the_same_body(api: SignedApi, partners: Partners) -> None:
    first = await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    again = await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky_hmac)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json() == {"member_ref": "alice", "currency": "SKY"}


async def test_worked_example(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sky = partners.sky
    for ref in ("alice", "bob"):
        assert (await api.post("/v1/members", {"member_ref": ref}, as_=sky)).status_code == 201

    issued = await api.post(
        "/v1/issuances", {"member_ref": "alice", "points": 1000, "reference": "flight LH1"}, as_=sky
    )
    assert issued.status_code == 201, issued.text
    issue = issued.json()
    assert balances(issue) == {"alice": (1000, 0, 1000)}
    assert issue["transaction"]["kind"] == "issue"
    assert issue["transaction"]["points"] == 1000
    assert issue["transaction"]["reference"] == "flight LH1"
    assert issue["transaction"]["partner"] == str(sky.partner.id)
    lines = {
        (p["account"], p["member_ref"], p["amount"], p["balance_after"], p["seq"])
        for p in issue["transaction"]["postings"]
    }
    assert lines == {("member", "alice", 1000, 1000, 1), ("issuance", None, -1000, -1000, 1)}
    assert all(len(p["hash"]) == 64 for p in issue["transaction"]["postings"])
    assert receipt_verifies(api, issue)

    redeemed = await api.post("/v1/redemptions", {"member_ref": "alice", "points": 300}, as_=sky)
    assert redeemed.status_code == 201
    assert balances(redeemed.json()) == {"alice": (700, 0, 700)}
    assert redeemed.json()["balances"] == [
        {"member_ref": "alice", "balance": 700, "held": 0, "available": 700}
    ]

    moved = await api.post(
        "/v1/transfers",
        {"from_member_ref": "alice", "to_member_ref": "bob", "points": 200},
        as_=partners.sky_hmac,
    )
    assert moved.status_code == 201
    assert moved.json()["balances"] == [
        {"member_ref": "alice", "balance": 500, "held": 0, "available": 500},
        {"member_ref": "bob", "balance": 200, "held": 0, "available": 200},
    ]
    assert receipt_verifies(api, moved.json())

    held = await api.post("/v1/holds", {"member_ref": "alice", "points": 100}, as_=sky)
    assert held.status_code == 201, held.text
    hold = held.json()
    assert hold["hold"]["status"] == "active"
    assert hold["transaction"]["kind"] == "hold"
    assert hold["transaction"]["postings"] == []
    assert balances(hold) == {"alice": (500, 100, 400)}
    assert receipt_verifies(api, hold)
    hold_id = hold["hold"]["id"]
    shown = await api.get(f"/v1/holds/{hold_id}", as_=sky)
    assert shown.status_code == 200
    assert shown.json() == hold["hold"]

    captured = await api.post(f"/v1/holds/{hold_id}/capture", {"points": 60}, as_=sky)
    assert captured.status_code == 200, captured.text
    assert captured.json()["hold"]["status"] == "captured"
    assert captured.json()["hold"]["captured"] == 60
    assert balances(captured.json()) == {"alice": (440, 0, 440)}
    again = await api.post(f"/v1/holds/{hold_id}/void", as_=sky)
    assert again.status_code == 409
    assert again.json()["type"].endswith("/hold-not-active")

    second = await api.post(
        "/v1/holds", {"member_ref": "alice", "points": 50, "expires_in": 600}, as_=sky
    )
    assert balances(second.json()) == {"alice": (440, 50, 390)}
    voided = await api.post(f"/v1/holds/{second.json()['hold']['id']}/void", as_=sky)
    assert voided.status_code == 200
    assert voided.json()["hold"]["status"] == "voided"
    assert balances(voided.json()) == {"alice": (440, 0, 440)}

    issue_id = issue["transaction"]["id"]
    reversed_ = await api.post(f"/v1/transactions/{issue_id}/reversal", {"points": 100}, as_=sky)
    assert reversed_.status_code == 201, reversed_.text
    assert reversed_.json()["transaction"]["reverses"] == issue_id
    assert balances(reversed_.json()) == {"alice": (340, 0, 340)}
    too_much = await api.post(f"/v1/transactions/{issue_id}/reversal", {"points": 901}, as_=sky)
    assert too_much.status_code == 422
    assert too_much.json()["type"].endswith("/reversal-exceeds-original")
    assert too_much.json()["remaining"] == 900

    member = await api.get("/v1/members/alice", as_=sky)
    assert member.status_code == 200
    body = member.json()
    assert (body["balance"], body["held"], body["available"]) == (340, 0, 340)
    assert body["head"]["balance"] == 340
    assert body["head"]["seq"] == 5  # issue, redeem, transfer, capture, reversal (holds: none)
    assert body["head"]["member_ref"] == "alice" and body["head"]["currency"] == "SKY"
    assert verify_document(
        body["head"], body["signature"], api.exchange_keys[body["signature"]["key_id"]]
    )
    bob = (await api.get("/v1/members/bob", as_=sky)).json()
    assert (bob["balance"], bob["available"]) == (200, 200)

    page = await api.get("/v1/members/alice/transactions", as_=sky, query="limit=4")
    assert page.status_code == 200
    items = page.json()["items"]
    assert [i["seq"] for i in items] == [5, 4, 3, 2]
    assert [i["kind"] for i in items] == ["reverse", "capture", "transfer", "redeem"]
    assert [i["amount"] for i in items] == [-100, -60, -200, -300]
    cursor = page.json()["next_cursor"]
    rest = await api.get(
        "/v1/members/alice/transactions", as_=sky, query=f"limit=4&cursor={cursor}"
    )
    assert [i["seq"] for i in rest.json()["items"]] == [1]
    assert rest.json()["items"][0]["reference"] == "flight LH1"
    assert rest.json()["next_cursor"] is None

    # Each answer shows the transaction as the ledger holds it, receipt and all.
    for answer in (issue, redeemed.json(), moved.json(), captured.json(), reversed_.json()):
        shown_tx = await api.get(f"/v1/transactions/{answer['transaction']['id']}", as_=sky)
        assert shown_tx.status_code == 200
        assert shown_tx.json()["transaction"] == answer["transaction"]
        assert shown_tx.json()["receipt"] == answer["receipt"]
        assert receipt_verifies(api, shown_tx.json())

    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def test_another_partners_things_are_not_found(api: SignedApi, partners: Partners) -> None:
    sky, htl = partners.sky, partners.htl
    await api.post("/v1/members", {"member_ref": "alice"}, as_=sky)
    issued = (
        await api.post("/v1/issuances", {"member_ref": "alice", "points": 500}, as_=sky)
    ).json()
    hold = (await api.post("/v1/holds", {"member_ref": "alice", "points": 100}, as_=sky)).json()
    postings = await api.ledger_size()

    tx_id, hold_id = issued["transaction"]["id"], hold["hold"]["id"]
    attempts = [
        await api.post("/v1/issuances", {"member_ref": "alice", "points": 5}, as_=htl),
        await api.post("/v1/redemptions", {"member_ref": "alice", "points": 5}, as_=htl),
        await api.post(
            "/v1/transfers",
            {"from_member_ref": "alice", "to_member_ref": "carol", "points": 5},
            as_=htl,
        ),
        await api.post("/v1/holds", {"member_ref": "alice", "points": 5}, as_=htl),
        await api.post(f"/v1/holds/{hold_id}/capture", as_=htl),
        await api.post(f"/v1/holds/{hold_id}/void", as_=htl),
        await api.post(f"/v1/transactions/{tx_id}/reversal", as_=htl),
        await api.get("/v1/members/alice", as_=htl),
        await api.get("/v1/members/alice/transactions", as_=htl),
        await api.get(f"/v1/holds/{hold_id}", as_=htl),
        await api.get(f"/v1/transactions/{tx_id}", as_=htl),
    ]
    assert [a.status_code for a in attempts] == [404] * len(attempts)
    assert all(a.headers["content-type"] == "application/problem+json" for a in attempts)
    assert await api.ledger_size() == postings
    unknown = await api.get(f"/v1/transactions/{uuid.uuid4()}", as_=sky)
    assert unknown.status_code == 404


async def test_a_transfer_names_the_first_member_it_cannot_find(
    api: SignedApi, partners: Partners
) -> None:
    sky = partners.sky
    await api.post("/v1/members", {"member_ref": "alice"}, as_=sky)
    await api.post("/v1/issuances", {"member_ref": "alice", "points": 50}, as_=sky)
    before = await api.ledger_size()
    # (from, to, the ref the problem names): the sender is looked for first.
    cases = [
        ("ghost", "phantom", "ghost"),
        ("ghost", "alice", "ghost"),
        ("alice", "ghost", "ghost"),
    ]
    for source, target, missing in cases:
        answer = await api.post(
            "/v1/transfers",
            {"from_member_ref": source, "to_member_ref": target, "points": 5},
            as_=sky,
        )
        assert answer.status_code == 404, (source, target)
        assert answer.json()["type"].endswith("/member-not-found")
        assert answer.json()["member_ref"] == missing, (source, target)
    assert await api.ledger_size() == before


async def test_brand_only_operations_refuse_the_operator(
    api: SignedApi, partners: Partners
) -> None:
    answer = await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.operator)
    assert answer.status_code == 403
    assert answer.json()["type"].endswith("/not-a-brand")


async def test_insufficient_points_is_a_problem_with_the_facts(
    api: SignedApi, partners: Partners
) -> None:
    await api.post("/v1/members", {"member_ref": "alice"}, as_=partners.sky)
    await api.post("/v1/issuances", {"member_ref": "alice", "points": 10}, as_=partners.sky)
    answer = await api.post(
        "/v1/redemptions", {"member_ref": "alice", "points": 11}, as_=partners.sky
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "type": "https://exchange.example/problems/insufficient-points",
        "title": "Not enough available points",
        "status": 422,
        "detail": "member 'alice' has 10 points available, 11 requested",
        "member_ref": "alice",
        "available": 10,
        "requested": 11,
    }


async def test_member_refs_that_need_percent_encoding(api: SignedApi, partners: Partners) -> None:
    """``@path`` is signed as sent, percent-encoded; the handler sees the decoded reference."""
    enrolled = await api.post("/v1/members", {"member_ref": "jöhn doe"}, as_=partners.sky)
    assert enrolled.status_code == 201
    await api.post("/v1/issuances", {"member_ref": "jöhn doe", "points": 7}, as_=partners.sky)
    member = await api.get("/v1/members/j%C3%B6hn%20doe", as_=partners.sky)
    assert member.status_code == 200, member.text
    assert (member.json()["member_ref"], member.json()["balance"]) == ("jöhn doe", 7)
    history = await api.get("/v1/members/j%C3%B6hn%20doe/transactions", as_=partners.sky)
    assert [item["amount"] for item in history.json()["items"]] == [7]


async def test_an_oversized_body_is_refused_before_anything_else(
    api: SignedApi, partners: Partners
) -> None:
    huge = {"member_ref": "alice", "points": 1, "reference": "x" * 70_000}
    answer = await api.post("/v1/issuances", huge, as_=partners.sky)
    assert answer.status_code == 413
    assert answer.json()["type"] == "https://exchange.example/problems/request-too-large"
