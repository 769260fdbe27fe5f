"""Pricing over HTTP: the operator sets point values and rate versions; brands read those in
force, and the charities they can donate to. Brands cannot set prices."""

from __future__ import annotations

import datetime as dt

from exchange.base import utcnow
from tests.integration.conftest import Partners, SignedApi
from tests.integration.pricing_support import problem_type, set_rate, set_value


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def test_the_operator_prices_and_brands_read_what_is_in_force(
    api: SignedApi, partners: Partners
) -> None:
    operator = partners.operator
    sky_value = await set_value(api, operator, "SKY", 12_000)
    await set_value(api, operator, "HTL", 8_000)
    assert sky_value["currency"] == "SKY"
    assert sky_value["micros_per_point"] == 12_000
    assert sky_value["partner_id"] == str(partners.sky.partner.id)
    rate = await set_rate(
        api, operator, from_currency="SKY", to_currency="HTL",
        from_points=1_000, to_points=750, fee_bps=100, min_points=500,
    )  # fmt: skip
    assert rate["from_partner_id"] == str(partners.sky.partner.id)
    assert rate["to_partner_id"] == str(partners.htl.partner.id)

    # A new version an hour from now supersedes from then on, not before.
    later = utcnow().replace(microsecond=0) + dt.timedelta(hours=1)
    newer = await set_rate(
        api, operator, from_currency="SKY", to_currency="HTL",
        from_points=1_000, to_points=800, fee_bps=50, effective_at=_rfc3339(later),
    )  # fmt: skip
    assert (newer["min_points"], _when(newer["effective_at"])) == (0, later)
    future_value = await api.post(
        "/v1/point-values",
        {"currency": "HTL", "micros_per_point": 9_000, "effective_at": _rfc3339(later)},
        as_=operator,
    )
    assert future_value.status_code == 201, future_value.text

    now = await api.get("/v1/rates", as_=partners.htl)
    assert now.status_code == 200, now.text
    in_force = now.json()
    assert [
        (r["id"], r["from_currency"], r["to_currency"], r["from_points"], r["to_points"],
         r["fee_bps"], r["min_points"])
        for r in in_force["rates"]
    ] == [(rate["id"], "SKY", "HTL", 1_000, 750, 100, 500)]  # fmt: skip
    assert _when(in_force["rates"][0]["effective_at"]) == _when(rate["effective_at"])
    assert [(v["currency"], v["micros_per_point"]) for v in in_force["point_values"]] == [
        ("HTL", 8_000),
        ("SKY", 12_000),
    ]
    assert in_force["point_values"][1]["id"] == sky_value["id"]

    then = await api.get("/v1/rates", as_=partners.sky, query=f"at={_rfc3339(later)}")
    assert then.status_code == 200, then.text
    assert _when(then.json()["at"]) == later
    assert [(r["id"], r["to_points"], r["fee_bps"]) for r in then.json()["rates"]] == [
        (newer["id"], 800, 50)
    ]
    assert [(v["currency"], v["micros_per_point"]) for v in then.json()["point_values"]] == [
        ("HTL", 9_000),
        ("SKY", 12_000),
    ]

    values = await api.get("/v1/point-values", as_=operator)
    assert values.status_code == 200, values.text
    assert [(v["currency"], v["micros_per_point"]) for v in values.json()] == [
        ("HTL", 8_000),
        ("SKY", 12_000),
    ]


async def test_brands_cannot_set_or_list_prices(api: SignedApi, partners: Partners) -> None:
    attempts = [
        await api.post(
            "/v1/point-values", {"currency": "SKY", "micros_per_point": 1}, as_=partners.sky
        ),
        await api.post(
            "/v1/rates",
            {
                "from_currency": "SKY",
                "to_currency": "HTL",
                "from_points": 1,
                "to_points": 1_000,
                "fee_bps": 0,
            },
            as_=partners.sky_hmac,
        ),
        await api.get("/v1/point-values", as_=partners.htl),
    ]
    assert [a.status_code for a in attempts] == [403, 403, 403]
    assert {problem_type(a) for a in attempts} == {"operator-only"}
    nothing = (await api.get("/v1/rates", as_=partners.sky)).json()
    assert (nothing["rates"], nothing["point_values"]) == ([], [])


async def test_pricing_refusals(api: SignedApi, partners: Partners) -> None:
    operator = partners.operator
    rate = {"from_currency": "SKY", "to_currency": "HTL", "from_points": 1, "to_points": 1}
    past = _rfc3339(utcnow() - dt.timedelta(minutes=1))
    soon = _rfc3339(utcnow() + dt.timedelta(hours=2))
    cases = [
        ("/v1/point-values", {"currency": "XXX", "micros_per_point": 1}, 422, "unknown-currency"),
        ("/v1/rates", {**rate, "to_currency": "XXX", "fee_bps": 0}, 422, "unknown-currency"),
        ("/v1/rates", {**rate, "to_currency": "SKY", "fee_bps": 0}, 422, "same-brand"),
        (
            "/v1/point-values",
            {"currency": "SKY", "micros_per_point": 1, "effective_at": past},
            422,
            "effective-in-past",
        ),
        ("/v1/rates", {**rate, "fee_bps": 0, "effective_at": past}, 422, "effective-in-past"),
        (
            "/v1/rates",
            {**rate, "fee_bps": 0, "effective_at": "2099-01-01T00:00:00"},
            422,
            "invalid-request",
        ),
        ("/v1/rates", {**rate, "fee_bps": 10_001}, 422, "invalid-request"),
        ("/v1/rates", {**rate, "fee_bps": 0, "from_points": 0}, 422, "invalid-request"),
        ("/v1/rates", {**rate, "fee_bps": 1.5}, 422, "invalid-request"),
        ("/v1/point-values", {"currency": "SKY", "micros_per_point": 0}, 422, "invalid-request"),
        (
            "/v1/point-values",
            {"currency": "SKY", "micros_per_point": 1_000_001},
            422,
            "invalid-request",
        ),
        ("/v1/point-values", {"currency": "SKY", "micros_per_point": "5"}, 422, "invalid-request"),
    ]
    for path, body, status, slug in cases:
        answer = await api.post(path, body, as_=operator)
        assert (answer.status_code, problem_type(answer)) == (status, slug), (body, answer.text)

    # One version per brand (or pair) and effective time.
    first = await api.post(
        "/v1/point-values",
        {"currency": "SKY", "micros_per_point": 10, "effective_at": soon},
        as_=operator,
    )
    assert first.status_code == 201, first.text
    again = await api.post(
        "/v1/point-values",
        {"currency": "SKY", "micros_per_point": 11, "effective_at": soon},
        as_=operator,
    )
    assert (again.status_code, problem_type(again)) == (409, "version-conflict")
    naive = await api.get("/v1/rates", as_=partners.sky, query="at=2030-01-01T00:00:00")
    assert (naive.status_code, problem_type(naive)) == (422, "invalid-input")
    values = await api.get("/v1/point-values", as_=operator, query=f"at={soon}")
    assert [(v["currency"], v["micros_per_point"]) for v in values.json()] == [("SKY", 10)]


async def test_charities_are_listed_for_brands(api: SignedApi, partners: Partners) -> None:
    made = await api.post(
        "/v1/partners",
        {"kind": "charity", "name": "Clean Water", "min_donation_points": 100, "code": "AID"},
        as_=partners.operator,
    )
    assert made.status_code == 201, made.text
    other = await api.post(
        "/v1/partners", {"kind": "charity", "name": "Food Bank"}, as_=partners.operator
    )
    answer = await api.get("/v1/charities", as_=partners.sky)
    assert answer.status_code == 200
    assert answer.json() == [
        {"id": made.json()["id"], "name": "Clean Water", "min_donation_points": 100, "code": "AID"},
        {"id": other.json()["id"], "name": "Food Bank", "min_donation_points": None, "code": None},
    ]


async def test_pricing_operations_are_documented(api: SignedApi) -> None:
    document = (await api.get("/docs/openapi.json", as_=None)).json()
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    expected = {
        ("GET", "/v1/rates"): ("listRates", set()),
        ("POST", "/v1/rates"): ("setRate", {"403", "409"}),
        ("GET", "/v1/point-values"): ("listPointValues", {"403"}),
        ("POST", "/v1/point-values"): ("setPointValue", {"403", "409"}),
        ("GET", "/v1/charities"): ("listCharities", set()),
        ("POST", "/v1/quotes"): ("createQuote", {"403", "404", "409"}),
        ("POST", "/v1/conversions"): ("createConversion", {"403", "404", "409", "503"}),
        ("POST", "/v1/donations"): ("createDonation", {"403", "404", "409"}),
    }
    for key, (operation_id, statuses) in expected.items():
        operation = operations[key]
        assert operation["operationId"] == operation_id
        assert operation["summary"]
        assert {"400", "401", "422", "500", *statuses} <= set(operation["responses"]), key
        for status in ("400", "401", "422", "500", *statuses):
            assert "application/problem+json" in operation["responses"][status]["content"], key
