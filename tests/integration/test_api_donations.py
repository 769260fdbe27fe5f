"""Donations over HTTP.

The worked example: SKY points are worth 12 000 micros (1.2 cents). Alice, who has 20 000 SKY,
gives 5 000 to Clean Water (a charity taking 100 points or more): Sky Air owes Clean Water
5 000 * 12 000 = 60 000 000 micros (60.00 EUR), and Alice holds a receipt the exchange signed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.verify import verify_ledger
from partners.service import get_partner
from tests.integration.conftest import Credentials, Partners, SignedApi, register_key
from tests.integration.pricing_support import (
    BAD_POINTS,
    balance,
    enrol,
    lines,
    problem_type,
    set_value,
    signed_by_exchange,
)


@pytest.fixture
async def charity(api: SignedApi, partners: Partners) -> dict[str, Any]:
    """Clean Water, registered by the operator; Alice is a Sky Air member with 20 000 points."""
    made = await api.post(
        "/v1/partners",
        {"kind": "charity", "name": "Clean Water", "min_donation_points": 100},
        as_=partners.operator,
    )
    assert made.status_code == 201, made.text
    await set_value(api, partners.operator, "SKY", 12_000)
    await enrol(api, partners.sky, "alice", 20_000)
    charity: dict[str, Any] = made.json()
    return charity


def _donate(charity: Any, points: Any, member_ref: str = "alice") -> dict[str, Any]:
    return {"member_ref": member_ref, "charity": str(charity), "points": points}


async def test_alice_gives_5_000_sky_to_clean_water_and_sky_reverses_it_in_two_parts(
    api: SignedApi,
    partners: Partners,
    charity: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sky = partners.sky
    listed = (await api.get("/v1/charities", as_=sky)).json()
    assert listed == [
        {"id": charity["id"], "name": "Clean Water", "min_donation_points": 100, "code": None}
    ]

    answer = await api.post("/v1/donations", _donate(charity["id"], 5_000), as_=sky)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    transaction = body["transaction"]
    receipt = dict(body["donation_receipt"])
    signature = receipt.pop("signature")
    assert receipt == {
        "type": "donation-receipt",
        "id": transaction["id"],
        "member_ref": "alice",
        "points_currency": "SKY",
        "charity": {"id": charity["id"], "name": "Clean Water"},
        "points": 5_000,
        "amount_micros": 60_000_000,
        "currency": "EUR",
        "created_at": receipt["created_at"],
    }
    # The signature is over the receipt as it came, with the key GET /v1/keys publishes.
    keys = {k["key_id"] for k in (await api.get("/v1/keys", as_=None)).json()}
    assert signature["key_id"] in keys
    assert signed_by_exchange(api, receipt, signature)
    assert not signed_by_exchange(api, {**receipt, "amount_micros": 60_000_001}, signature)
    # One answer shape (issue 16): ``receipt`` signs the transaction, as in every operation.
    assert signed_by_exchange(api, transaction, body["receipt"])
    assert "transaction_signature" not in body

    assert (transaction["kind"], transaction["points"]) == ("donate", 5_000)
    assert lines(transaction) == {
        "SKY:alice": -5_000,
        "SKY:issuance": 5_000,
        "EUR:settlement": -60_000_000,
    }
    assert body["balances"] == [
        {"member_ref": "alice", "balance": 15_000, "held": 0, "available": 15_000}
    ]

    # Clean Water sees the money owed to it.
    water = await _charity_key(api, partners, sessions, charity)
    its_side = (await api.get(f"/v1/transactions/{transaction['id']}", as_=water)).json()
    assert lines(its_side["transaction"]) == {"EUR:settlement": 60_000_000}

    # Sky Air reverses 1 234 points, then the other 3 766: the money follows the points.
    path = f"/v1/transactions/{transaction['id']}/reversal"
    first = await api.post(path, {"points": 1_234}, as_=sky)
    assert first.status_code == 201, first.text
    assert lines(first.json()["transaction"]) == {
        "SKY:alice": 1_234,
        "SKY:issuance": -1_234,
        "EUR:settlement": 14_808_000,
    }
    assert first.json()["balances"][0]["balance"] == 16_234
    rest = await api.post(path, as_=sky)
    assert rest.status_code == 201, rest.text
    assert lines(rest.json()["transaction"]) == {
        "SKY:alice": 3_766,
        "SKY:issuance": -3_766,
        "EUR:settlement": 45_192_000,
    }
    assert await balance(api, sky, "alice") == 20_000
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def _charity_key(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    charity: dict[str, Any],
) -> Credentials:
    """A key for the charity (made by the operator), so that it can read what it is owed."""
    async with sessions() as session:
        info = await get_partner(session, uuid.UUID(charity["id"]))
    return await register_key(sessions, partners.master_key, info)


async def test_a_replayed_donation_posts_once(
    api: SignedApi, partners: Partners, charity: dict[str, Any]
) -> None:
    before = await api.ledger_size()
    body = _donate(charity["id"], 1_000)
    first = await api.post("/v1/donations", body, as_=partners.sky, idempotency_key="d1")
    again = await api.post("/v1/donations", body, as_=partners.sky, idempotency_key="d1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert await api.ledger_size() == (before[0] + 1, before[1] + 4)
    assert await balance(api, partners.sky, "alice") == 19_000


async def test_refusals_post_nothing(
    api: SignedApi, partners: Partners, charity: dict[str, Any]
) -> None:
    sky, htl = partners.sky, partners.htl
    await enrol(api, htl, "hank", 1_000)  # HTL has no point value
    water = charity["id"]
    cases: list[tuple[str, Credentials, dict[str, Any], int, str]] = [
        ("to a brand", sky, _donate(htl.partner.id, 1_000), 422, "not-a-charity"),
        ("to the operator", sky, _donate(partners.operator.partner.id, 1_000), 422,
         "not-a-charity"),
        ("to nobody", sky, _donate(uuid.uuid4(), 1_000), 422, "not-a-charity"),
        # A charity is named by id or by code: an unknown code is no charity.
        ("to an unknown code", sky, _donate("clean-water", 1_000), 422, "not-a-charity"),
        ("below the charity's minimum", sky, _donate(water, 99), 422, "below-charity-minimum"),
        ("more than she has", sky, _donate(water, 20_001), 422, "insufficient-points"),
        ("another brand's member", htl, _donate(water, 1_000), 404, "member-not-found"),
        ("no point value", htl, _donate(water, 1_000, "hank"), 422, "point-value-not-found"),
        ("the operator", partners.operator, _donate(water, 1_000), 403, "not-a-brand"),
    ]  # fmt: skip
    before = await api.ledger_size()
    for case, caller, body, status, slug in cases:
        answer = await api.post("/v1/donations", body, as_=caller)
        assert (answer.status_code, problem_type(answer)) == (status, slug), (case, answer.text)
        if slug == "below-charity-minimum":
            assert (answer.json()["points"], answer.json()["min_donation_points"]) == (99, 100)
    for points in BAD_POINTS:
        answer = await api.post("/v1/donations", _donate(water, points), as_=sky)
        assert answer.status_code == 422, (points, answer.text)
        assert problem_type(answer) == "invalid-amount", points
        assert answer.json()["field"] == "points"
    assert await api.ledger_size() == before
    assert await balance(api, sky, "alice") == 20_000
