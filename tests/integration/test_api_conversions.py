"""Conversions and quotes over HTTP.

The worked example: the operator values SKY points at 12 000 micros (1.2 cents) and HTL points at
8 000, and sets SKY -> HTL at 1000:750 with a 1% fee (100 bps) and a minimum of 500. Alice, who
has 20 000 SKY, converts 10 000: the fee is 100 SKY, she gets floor(9 900 * 0.75) = 7 425 HTL,
and Sky Air owes Hotel Co 7 425 * 8 000 = 59 400 000 micros (59.40 EUR) and the operator
100 * 12 000 = 1 200 000 (1.20 EUR)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.verify import verify_ledger
from exchange.settings import Settings
from tests.conftest import base_settings, make_partner
from tests.integration.conftest import Credentials, Partners, SignedApi, register_key
from tests.integration.pricing_support import (
    BAD_POINTS,
    balance,
    enrol,
    lines,
    problem_type,
    set_rate,
    set_value,
    signed_by_exchange,
)


@pytest.fixture
def quote_ttl_seconds() -> int:
    return 120


@pytest.fixture
def settings(database_url: str | None, tmp_path: Path, quote_ttl_seconds: int) -> Settings:
    return replace(base_settings(tmp_path, database_url), quote_ttl_seconds=quote_ttl_seconds)


@pytest.fixture
async def priced(api: SignedApi, partners: Partners) -> dict[str, Any]:
    """The worked example's values and rate, set by the operator; Alice is a member of both
    brands with 20 000 SKY; Bob is a member of Sky Air only."""
    await set_value(api, partners.operator, "SKY", 12_000)
    await set_value(api, partners.operator, "HTL", 8_000)
    rate = await set_rate(
        api, partners.operator, from_currency="SKY", to_currency="HTL",
        from_points=1_000, to_points=750, fee_bps=100, min_points=500,
    )  # fmt: skip
    await enrol(api, partners.sky, "alice", 20_000)
    await enrol(api, partners.htl, "alice")
    await enrol(api, partners.sky, "bob", 1_000)
    return rate


def _convert(points: Any, to_member_ref: str = "alice", **more: Any) -> dict[str, Any]:
    return {
        "member_ref": "alice", "to_partner": "HTL", "to_member_ref": to_member_ref,
        "points": points, **more,
    }  # fmt: skip


async def test_alice_converts_10_000_sky_to_htl_and_sky_reverses_a_third(
    api: SignedApi,
    partners: Partners,
    priced: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sky, htl = partners.sky, partners.htl
    answer = await api.post("/v1/conversions", _convert(10_000, reference="trip 7"), as_=sky)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["conversion"] == {
        "rate_version_id": priced["id"],
        "quote_id": None,
        "from_currency": "SKY",
        "to_currency": "HTL",
        "member_ref": "alice",
        "to_member_ref": "alice",
        "points": 10_000,
        "fee": 100,
        "out": 7_425,
        "source_value_micros": 12_000,
        "destination_value_micros": 8_000,
        "money": {
            "currency": "EUR",
            "destination_micros": 59_400_000,
            "operator_fee_micros": 1_200_000,
        },
    }
    transaction = body["transaction"]
    assert (transaction["kind"], transaction["points"], transaction["reference"]) == (
        "convert", 10_000, "trip 7",
    )  # fmt: skip
    # Sky Air sees its own side: the points go home, and it owes 60.60 EUR.
    assert lines(transaction) == {
        "SKY:alice": -10_000,
        "SKY:issuance": 10_000,
        "EUR:settlement": -60_600_000,
    }
    assert signed_by_exchange(api, transaction, body["receipt"])
    assert body["balances"] == [
        {"member_ref": "alice", "balance": 10_000, "held": 0, "available": 10_000}
    ]
    assert (await balance(api, sky, "alice"), await balance(api, htl, "alice")) == (10_000, 7_425)

    # Hotel Co and the operator each read their side of the same transaction.
    tx_path = f"/v1/transactions/{transaction['id']}"
    hotel_side = (await api.get(tx_path, as_=htl)).json()
    assert lines(hotel_side["transaction"]) == {
        "HTL:issuance": -7_425,
        "HTL:alice": 7_425,
        "EUR:settlement": 59_400_000,
    }
    assert signed_by_exchange(api, hotel_side["transaction"], hotel_side["receipt"])
    operator_side = (await api.get(tx_path, as_=partners.operator)).json()
    assert lines(operator_side["transaction"]) == {"EUR:settlement": 1_200_000}
    # Hotel Co may read the conversion but not reverse it: a 403 that says why (issue 16).
    by_hotel = await api.post(f"{tx_path}/reversal", {"points": 1}, as_=htl)
    assert (by_hotel.status_code, problem_type(by_hotel)) == (403, "not-reversible-by-you")

    # Sky Air reverses 3 333 of the 10 000 points: Alice gets them back, and gives back
    # floor(7 425 * 0.3333) = 2 474 HTL; the money follows those points: 2 474 HTL at 8 000
    # and floor(100 * 0.3333) = 33 fee points at 12 000.
    reversed_ = await api.post(f"{tx_path}/reversal", {"points": 3_333}, as_=sky)
    assert reversed_.status_code == 201, reversed_.text
    reversal = reversed_.json()
    assert reversal["transaction"]["reverses"] == transaction["id"]
    assert lines(reversal["transaction"]) == {
        "SKY:alice": 3_333,
        "SKY:issuance": -3_333,
        "EUR:settlement": 20_188_000,
    }
    assert reversal["balances"] == [
        {"member_ref": "alice", "balance": 13_333, "held": 0, "available": 13_333}
    ]
    assert (await balance(api, sky, "alice"), await balance(api, htl, "alice")) == (13_333, 4_951)
    too_much = await api.post(f"{tx_path}/reversal", {"points": 6_668}, as_=sky)
    assert (too_much.status_code, problem_type(too_much)) == (422, "reversal-exceeds-original")
    assert too_much.json()["remaining"] == 6_667

    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def test_the_destination_may_be_named_by_partner_id(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    body = _convert(1_000, to_partner=str(partners.htl.partner.id))
    quote = await api.post("/v1/quotes", body, as_=partners.sky)
    assert quote.status_code == 201, quote.text
    assert (quote.json()["to_currency"], quote.json()["out"]) == ("HTL", 742)
    converted = await api.post("/v1/conversions", body, as_=partners.sky)
    assert converted.status_code == 201, converted.text
    assert converted.json()["conversion"]["out"] == 742  # floor(990 * 0.75)
    assert await balance(api, partners.htl, "alice") == 742


async def test_a_replayed_conversion_posts_once(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    before = await api.ledger_size()
    first = await api.post(
        "/v1/conversions", _convert(2_000), as_=partners.sky, idempotency_key="c1"
    )
    again = await api.post(
        "/v1/conversions", _convert(2_000), as_=partners.sky, idempotency_key="c1"
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    transactions, postings = await api.ledger_size()
    assert (transactions, postings) == (before[0] + 1, before[1] + 7)
    assert await balance(api, partners.sky, "alice") == 18_000
    assert await balance(api, partners.htl, "alice") == 1_485
    other = await api.post(
        "/v1/conversions", _convert(2_001), as_=partners.sky, idempotency_key="c1"
    )
    assert (other.status_code, problem_type(other)) == (422, "idempotency-conflict")
    assert await api.ledger_size() == (transactions, postings)


async def test_a_quote_is_spent_once(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    sky = partners.sky
    made = await api.post("/v1/quotes", _convert(2_000), as_=sky)
    assert made.status_code == 201, made.text
    quote = made.json()
    assert (quote["rate_version_id"], quote["points"], quote["fee"], quote["out"]) == (
        priced["id"], 2_000, 20, 1_485,
    )  # fmt: skip
    assert quote["money"] == {
        "currency": "EUR",
        "destination_micros": 11_880_000,
        "operator_fee_micros": 240_000,
    }
    lifetime = dt.datetime.fromisoformat(quote["expires_at"]) - dt.datetime.fromisoformat(
        quote["created_at"]
    )
    assert lifetime == dt.timedelta(seconds=120)

    # The operator makes HTL dearer after the quote: the quote keeps the price it gave.
    await set_value(api, partners.operator, "HTL", 9_000)
    # Another brand cannot spend it; a request that differs from it is refused.
    theirs = await api.post("/v1/conversions", {"quote_id": quote["quote_id"]}, as_=partners.htl)
    assert (theirs.status_code, problem_type(theirs)) == (404, "quote-not-found")
    mismatch = await api.post(
        "/v1/conversions", {"quote_id": quote["quote_id"], "points": 2_001}, as_=sky
    )
    assert (mismatch.status_code, problem_type(mismatch)) == (422, "quote-mismatch")

    before = await api.ledger_size()
    spent = await api.post("/v1/conversions", {"quote_id": quote["quote_id"]}, as_=sky)
    assert spent.status_code == 201, spent.text
    terms = spent.json()["conversion"]
    assert (terms["quote_id"], terms["out"], terms["destination_value_micros"]) == (
        quote["quote_id"], 1_485, 8_000,
    )  # fmt: skip
    assert terms["money"] == quote["money"]
    after = await api.ledger_size()
    assert after[0] == before[0] + 1

    reused = await api.post("/v1/conversions", _convert(2_000, quote_id=quote["quote_id"]), as_=sky)
    assert (reused.status_code, problem_type(reused)) == (409, "quote-used")
    assert await api.ledger_size() == after
    assert (await balance(api, sky, "alice"), await balance(api, partners.htl, "alice")) == (
        18_000, 1_485,
    )  # fmt: skip


@pytest.mark.parametrize("quote_ttl_seconds", [1])
async def test_an_expired_quote_is_refused(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    made = await api.post("/v1/quotes", _convert(2_000), as_=partners.sky)
    assert made.status_code == 201, made.text
    quote = made.json()
    expires_at = dt.datetime.fromisoformat(quote["expires_at"])
    assert expires_at - dt.datetime.fromisoformat(quote["created_at"]) == dt.timedelta(seconds=1)
    await asyncio.sleep(1.1)
    before = await api.ledger_size()
    late = await api.post("/v1/conversions", {"quote_id": quote["quote_id"]}, as_=partners.sky)
    assert (late.status_code, problem_type(late)) == (422, "quote-expired")
    assert await api.ledger_size() == before
    assert await balance(api, partners.sky, "alice") == 20_000


@pytest.fixture
async def car(
    api: SignedApi,
    partners: Partners,
    priced: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> Credentials:
    """Car Rental (CAR): Alice is a member; the SKY -> CAR rate takes effect only in an hour.
    Hotel Co converts to SKY at 1000:1; Hank, its member, has 10 000 HTL."""
    brand = await make_partner(sessions, settings, "brand", "Car Rental", "CAR")
    credentials = await register_key(sessions, partners.master_key, brand)
    await enrol(api, credentials, "alice")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    operator = partners.operator
    await set_rate(
        api, operator, from_currency="SKY", to_currency="CAR",
        from_points=1, to_points=1, fee_bps=0, effective_at=later,
    )  # fmt: skip
    await set_rate(
        api, operator, from_currency="HTL", to_currency="SKY",
        from_points=1_000, to_points=1, fee_bps=0,
    )  # fmt: skip
    await enrol(api, partners.htl, "hank", 10_000)
    return credentials


@pytest.mark.parametrize("path", ["/v1/conversions", "/v1/quotes"])
async def test_refusals_post_nothing(
    api: SignedApi, partners: Partners, car: Credentials, path: str
) -> None:
    sky, htl = partners.sky, partners.htl
    charity = await api.post(
        "/v1/partners", {"kind": "charity", "name": "Clean Water"}, as_=partners.operator
    )
    cases: list[tuple[str, Credentials, dict[str, Any], int, str]] = [
        ("unknown brand", sky, _convert(1_000, to_partner="XXX"), 422, "unknown-currency"),
        ("unknown id", sky, _convert(1_000, to_partner=str(uuid.uuid4())), 422, "unknown-currency"),
        (
            "a charity's id",
            sky,
            _convert(1_000, to_partner=charity.json()["id"]),
            422,
            "unknown-currency",
        ),
        ("same brand", sky, _convert(1_000, to_partner="SKY"), 422, "same-brand"),
        ("bob is Sky's", htl, {**_convert(1_000), "member_ref": "bob", "to_partner": "SKY"}, 404,
         "member-not-found"),
        ("under min_points", sky, _convert(499), 422, "below-minimum"),
        # 999 HTL at 1000:1 is 0.999 SKY
        ("out 0", htl, {**_convert(999), "member_ref": "hank", "to_partner": "SKY"}, 422,
         "zero-output"),
        ("rate not in force yet", sky, _convert(1_000, to_partner="CAR"), 422, "rate-not-found"),
        ("no rate at all", car, _convert(1_000, to_partner="HTL"), 422, "rate-not-found"),
        ("the operator", partners.operator, _convert(1_000), 403, "not-a-brand"),
        ("unknown field", sky, _convert(1_000, to_parnter="HTL"), 422, "invalid-request"),
    ]  # fmt: skip
    if path == "/v1/conversions":
        cases += [
            ("not enrolled there", sky, _convert(1_000, "carol"), 422, "member-not-enrolled"),
            ("more than she has", sky, _convert(20_001), 422, "insufficient-points"),
            ("unknown quote", sky, {"quote_id": str(uuid.uuid4())}, 404, "quote-not-found"),
            ("nothing given", sky, {"member_ref": "alice"}, 422, "invalid-input"),
        ]
    else:
        cases.append(("no points", sky, {**_convert(1), "points": None}, 422, "invalid-amount"))
    before = await api.ledger_size()
    for case, caller, body, status, slug in cases:
        answer = await api.post(path, body, as_=caller)
        assert (answer.status_code, problem_type(answer)) == (status, slug), (case, answer.text)
        assert answer.json().get("detail"), case
    assert await api.ledger_size() == before
    assert await balance(api, sky, "alice") == 20_000


async def test_bad_points_are_invalid_amount(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    before = await api.ledger_size()
    for path in ("/v1/conversions", "/v1/quotes"):
        for points in BAD_POINTS:
            answer = await api.post(path, _convert(points), as_=partners.sky)
            assert answer.status_code == 422, (path, points, answer.text)
            assert problem_type(answer) == "invalid-amount", (path, points)
            assert answer.json()["field"] == "points"
    assert await api.ledger_size() == before


async def test_a_conversion_queues_conversion_credited_for_the_destination_brand(
    api: SignedApi,
    partners: Partners,
    priced: dict[str, Any],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """In the conversion's own transaction: the event exists exactly when the conversion does."""
    answer = await api.post("/v1/conversions", _convert(10_000), as_=partners.sky)
    assert answer.status_code == 201, answer.text
    refused = await api.post("/v1/conversions", _convert(10**6), as_=partners.sky)
    assert refused.status_code == 422
    async with sessions() as session:
        rows = (
            await session.execute(text("SELECT partner_id, event_type, payload FROM outbox_event"))
        ).all()
    assert len(rows) == 1
    partner_id, event_type, payload = rows[0]
    assert uuid.UUID(str(partner_id)) == partners.htl.partner.id
    assert event_type == "conversion.credited"
    event = json.loads(payload)
    assert (event["to_member_ref"], event["points"], event["transaction_id"]) == (
        "alice",
        7_425,
        answer.json()["transaction"]["id"],
    )


async def test_a_conversion_refused_in_its_group_gives_its_quote_back(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    """A quoted conversion that the engine refuses (Bob has 1 000 SKY, the quote is for 5 000)
    while the rest of its group posts: its quote is not spent, and it converts once Bob has
    the points; the group's other operations stand."""
    sky = partners.sky
    await enrol(api, partners.htl, "bob")
    quote = await api.post(
        "/v1/quotes",
        {"member_ref": "bob", "to_partner": "HTL", "to_member_ref": "bob", "points": 5_000},
        as_=sky,
    )
    assert quote.status_code == 201, quote.text
    quote_id = quote.json()["quote_id"]
    answers = await asyncio.gather(
        api.post("/v1/conversions", {"quote_id": quote_id}, as_=sky),
        *(api.post("/v1/conversions", _convert(1_000), as_=sky) for _ in range(4)),
    )
    assert answers[0].status_code == 422
    assert problem_type(answers[0]) == "insufficient-points"
    assert [a.status_code for a in answers[1:]] == [201] * 4
    assert await balance(api, sky, "alice") == 16_000
    issued = await api.post("/v1/issuances", {"member_ref": "bob", "points": 4_000}, as_=sky)
    assert issued.status_code == 201
    spent = await api.post("/v1/conversions", {"quote_id": quote_id}, as_=sky)
    assert spent.status_code == 201, spent.text
    assert spent.json()["conversion"]["quote_id"] == quote_id
    again = await api.post("/v1/conversions", {"quote_id": quote_id}, as_=sky)
    assert again.status_code == 409
    assert problem_type(again) == "quote-used"


async def test_another_brands_members_cannot_be_probed(
    api: SignedApi, partners: Partners, priced: dict[str, Any]
) -> None:
    """Issue 15, finding 5 (README, "Members of other brands"). A quote never looks at the
    destination brand's members: Hotel Co's member ``alice`` and a ref it never enrolled get the
    same 201 quote. Only a conversion that would otherwise go through learns whether the member
    is enrolled: one beyond what the caller's member has is ``insufficient-points`` for either
    ref; and nothing is posted by any refusal."""
    sky = partners.sky
    quoted = {}
    for ref in ("alice", "nobody-at-htl"):
        answer = await api.post("/v1/quotes", _convert(1_000, ref), as_=sky)
        assert answer.status_code == 201, answer.text
        quoted[ref] = {k: v for k, v in answer.json().items() if k not in VARYING}
    assert quoted["alice"] == {**quoted["nobody-at-htl"], "to_member_ref": "alice"}
    before = await api.ledger_size()
    for ref in ("alice", "nobody-at-htl"):
        answer = await api.post("/v1/conversions", _convert(20_001, ref), as_=sky)
        assert (answer.status_code, problem_type(answer)) == (422, "insufficient-points"), ref
    poor = await api.post(
        "/v1/conversions", {**_convert(1_001, "nobody-at-htl"), "member_ref": "bob"}, as_=sky
    )
    assert (poor.status_code, problem_type(poor)) == (422, "insufficient-points")
    answer = await api.post("/v1/conversions", _convert(1_000, "nobody-at-htl"), as_=sky)
    assert (answer.status_code, problem_type(answer)) == (422, "member-not-enrolled")
    assert await api.ledger_size() == before


VARYING = {"quote_id", "expires_at", "created_at"}
