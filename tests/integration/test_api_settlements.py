"""Settlement over the signed API.

The day: SKY points are worth 12 000 micros, HTL points 8 000. Alice converts 10 000 SKY to HTL at
1000:750 with a 1% fee (fee 100 SKY, out 7 425 HTL) and gives 5 000 SKY to Clean Water. So Sky Air
owes Hotel Co 7 425 * 8 000 = 59 400 000 micros, the operator 100 * 12 000 = 1 200 000 and Clean
Water 5 000 * 12 000 = 60 000 000: Sky Air pays 120 600 000 micros, 120.60 EUR, that is 12 060
cents; Hotel Co receives 5 940 cents, the operator 120, Clean Water 6 000. No rounding is left."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from partners.models import Partner
from settlement import runs as settlement
from settlement.calendar import BusinessCalendar
from tests.integration.conftest import Credentials, Partners, SignedApi, register_key
from tests.integration.pricing_support import (
    enrol,
    problem_type,
    set_rate,
    set_value,
    signed_by_exchange,
)


@pytest.fixture
async def settled_day(
    api: SignedApi,
    partners: Partners,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[dt.date, Credentials, str]:
    """The day above, posted over the API and settled as the scheduler would after its cutoff."""
    operator = partners.operator
    made = await api.post("/v1/partners", {"kind": "charity", "name": "Clean Water"}, as_=operator)
    assert made.status_code == 201, made.text
    charity_id = made.json()["id"]
    from partners.service import get_partner

    async with sessions() as session:
        charity = await get_partner(session, __import__("uuid").UUID(charity_id))
    water = await register_key(sessions, partners.master_key, charity)
    await set_value(api, operator, "SKY", 12_000)
    await set_value(api, operator, "HTL", 8_000)
    await set_rate(
        api, operator, from_currency="SKY", to_currency="HTL", from_points=1000, to_points=750,
        fee_bps=100,
    )  # fmt: skip
    await enrol(api, partners.sky, "alice", 20_000)
    await enrol(api, partners.htl, "alice-h")
    converted = await api.post(
        "/v1/conversions",
        {"member_ref": "alice", "to_partner": "HTL", "to_member_ref": "alice-h", "points": 10_000},
        as_=partners.sky,
    )
    assert converted.status_code == 201, converted.text
    donated = await api.post(
        "/v1/donations",
        {"member_ref": "alice", "charity": charity_id, "points": 5_000},
        as_=partners.sky,
    )
    assert donated.status_code == 201, donated.text

    calendar = BusinessCalendar.from_settings(settings)
    day = calendar.business_date_of(utcnow())
    batch = await settlement.settle_day(
        sessions,
        day,
        settings=settings,
        keys=load_exchange_keys(settings),
        now=calendar.cutoff_at(day) + dt.timedelta(seconds=settings.settlement_grace_seconds + 1),
    )
    assert batch.status == "complete"
    return day, water, charity_id


def _position(statement: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        statement["net_micros"],
        statement["carry_in_micros"],
        statement["payout_minor"],
        statement["carry_out_micros"],
    )


async def test_each_participant_fetches_its_own_signed_statement(
    api: SignedApi, partners: Partners, settled_day: tuple[dt.date, Credentials, str]
) -> None:
    day, water, _ = settled_day
    expected = {
        "sky": (-120_600_000, 0, -12_060, 0),
        "htl": (59_400_000, 0, 5_940, 0),
        "operator": (1_200_000, 0, 120, 0),
        "water": (60_000_000, 0, 6_000, 0),
    }
    who = {"sky": partners.sky, "htl": partners.htl, "operator": partners.operator, "water": water}
    for name, credentials in who.items():
        answer = await api.get(f"/v1/settlements/{day.isoformat()}", as_=credentials)
        assert answer.status_code == 200, answer.text
        api.check_signed(answer)
        body = answer.json()
        statement = body["statement"]
        assert statement["participant"]["id"] == str(credentials.partner.id)
        assert _position(statement) == expected[name]
        assert signed_by_exchange(api, statement, body["signature"])
        tampered = {**statement, "payout_minor": statement["payout_minor"] + 1}
        assert not signed_by_exchange(api, tampered, body["signature"])

    listed = (await api.get("/v1/settlements", as_=partners.sky)).json()
    assert [(s["business_date"], s["payout_minor"]) for s in listed] == [(day.isoformat(), -12_060)]


async def test_sky_owes_each_counterparty_exactly_what_the_day_made(
    api: SignedApi, partners: Partners, settled_day: tuple[dt.date, Credentials, str]
) -> None:
    day, water, charity_id = settled_day
    statement = (await api.get(f"/v1/settlements/{day}", as_=partners.sky)).json()["statement"]
    owing = {line["partner_id"]: line["owing_micros"] for line in statement["counterparties"]}
    assert owing == {
        str(partners.htl.partner.id): 59_400_000,
        str(partners.operator.partner.id): 1_200_000,
        charity_id: 60_000_000,
    }
    assert sum(i["amount_minor"] for i in statement["instructions"]) == 12_060
    assert {i["payer_id"] for i in statement["instructions"]} == {str(partners.sky.partner.id)}
    charity_statement = (await api.get(f"/v1/settlements/{day}", as_=water)).json()["statement"]
    assert [
        (line["brand_id"], line["donated_micros"])
        for line in charity_statement["donations_by_brand"]
    ] == [(str(partners.sky.partner.id), 60_000_000)]


async def test_the_statement_as_csv_for_finance_teams(
    api: SignedApi, partners: Partners, settled_day: tuple[dt.date, Credentials, str]
) -> None:
    day, _, _ = settled_day
    answer = await api.get(f"/v1/settlements/{day}.csv", as_=partners.htl)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"  # once (issue 16)
    api.check_signed(answer)
    rows = list(
        csv.DictReader(line for line in io.StringIO(answer.text) if not line.startswith("#"))
    )
    position = next(row for row in rows if row["record"] == "position")
    assert (position["net_micros"], position["payout_minor"]) == ("59400000", "5940")
    assert answer.text.rstrip().splitlines()[-1].startswith("#")


async def test_a_day_the_partner_had_no_part_in_and_a_bad_date_are_refused(
    api: SignedApi, partners: Partners, settled_day: tuple[dt.date, Credentials, str]
) -> None:
    day, _, _ = settled_day
    earlier = await api.get(f"/v1/settlements/{day - dt.timedelta(days=3)}", as_=partners.sky)
    assert earlier.status_code == 404
    assert problem_type(earlier) == "statement-not-found"
    bad = await api.get("/v1/settlements/yesterday", as_=partners.sky)
    assert bad.status_code == 422


async def test_only_the_operator_runs_reads_and_pays_batches(
    api: SignedApi, partners: Partners, settled_day: tuple[dt.date, Credentials, str]
) -> None:
    day, _, _ = settled_day
    for call in (
        api.get("/v1/settlement-batches", as_=partners.sky),
        api.get(f"/v1/settlement-batches/{day}", as_=partners.sky),
        api.post(f"/v1/settlement-batches/{day}/payment", {}, as_=partners.sky),
        api.post("/v1/settlement-batches", {}, as_=partners.htl),
    ):
        answer = await call
        assert answer.status_code == 403, answer.text
        assert problem_type(answer) == "operator-only"

    batch = (await api.get(f"/v1/settlement-batches/{day}", as_=partners.operator)).json()
    assert sorted(p["payout_minor"] for p in batch["positions"]) == [-12_060, 120, 5_940, 6_000]
    assert len(batch["instructions"]) <= len(batch["positions"]) - 1

    # The fixture settled today as the scheduler will after tonight's cutoff. Asking for that
    # day again answers its batch, whatever the clock says (issue 16: it said "not due").
    again = await api.post(
        "/v1/settlement-batches", {"business_date": day.isoformat()}, as_=partners.operator
    )
    assert again.status_code == 201, again.text
    assert [b["business_date"] for b in again.json()] == [day.isoformat()]
    assert again.json()[0]["id"] == batch["id"]
    # Tomorrow has not ended, and the exchange says so, with when it does.
    tomorrow = (day + dt.timedelta(days=1)).isoformat()
    not_due = await api.post(
        "/v1/settlement-batches", {"business_date": tomorrow}, as_=partners.operator
    )
    assert not_due.status_code == 409
    assert problem_type(not_due) == "settlement-not-due"
    assert not_due.json()["cutoff_at"].endswith("Z")
    # Every day that is due: none yet on the real clock, today's being settled ahead.
    due = await api.post("/v1/settlement-batches", {}, as_=partners.operator)
    assert due.status_code == 201, due.text
    assert due.json() == []

    paid = await api.post(f"/v1/settlement-batches/{day}/payment", {}, as_=partners.operator)
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "paid"
    twice = await api.post(f"/v1/settlement-batches/{day}/payment", {}, as_=partners.operator)
    assert twice.status_code == 409
    assert problem_type(twice) == "settlement-already-paid"


async def test_a_partner_registers_its_webhook(api: SignedApi, partners: Partners) -> None:
    answer = await api.request(
        "PUT",
        "/v1/partners/me/webhook",
        as_=partners.htl,
        json_body={"url": "https://93.184.215.14/hooks"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"url": "https://93.184.215.14/hooks"}
    refused = await api.request(
        "PUT", "/v1/partners/me/webhook", as_=partners.htl, json_body={"url": "ftp://hotel.example"}
    )
    assert refused.status_code == 422


SETTLEMENT_OPERATIONS = (
    "listSettlements",
    "getSettlement",
    "setWebhook",
    "listSettlementBatches",
    "getSettlementBatch",
    "runSettlement",
    "markSettlementPaid",
)


async def test_every_settlement_answer_is_typed_in_the_openapi_document(api: SignedApi) -> None:
    """Each settlement operation's 200 answer is a named component with properties (or an array
    of one), not an untyped object."""
    document = (await api.get("/docs/openapi.json", as_=None)).json()
    components = document["components"]["schemas"]
    found = {}
    for item in document["paths"].values():
        for operation in item.values():
            if operation.get("operationId") in SETTLEMENT_OPERATIONS:
                found[operation["operationId"]] = operation
    assert sorted(found) == sorted(SETTLEMENT_OPERATIONS)
    for operation_id, operation in found.items():
        ok = next(operation["responses"][s] for s in ("200", "201") if s in operation["responses"])
        schema = ok["content"]["application/json"]["schema"]
        schema = schema.get("items", schema) if schema.get("type") == "array" else schema
        assert "$ref" in schema, (operation_id, schema)
        component = components[schema["$ref"].removeprefix("#/components/schemas/")]
        assert component.get("properties"), (operation_id, component)


async def test_a_webhook_change_that_fails_to_commit_is_not_a_200(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PUT is committed before its answer leaves: a commit that fails is a 500, and the
    address is not changed."""

    async def failing_commit(self: AsyncSession) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    answer = await api.request(
        "PUT",
        "/v1/partners/me/webhook",
        as_=partners.htl,
        json_body={"url": "https://93.184.215.14/hooks"},
    )
    monkeypatch.undo()
    assert answer.status_code == 500, answer.text
    async with sessions() as session:
        url = await session.scalar(
            select(Partner.webhook_url).where(Partner.id == partners.htl.partner.id)
        )
    assert url is None
