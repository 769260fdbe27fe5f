"""A problem for each class of bad input, and nothing posted."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Partners, SignedApi

BAD_POINTS = [0, -1, 1.5, 1.0, "10", True, None, 10**13]
PROBLEMS = "https://exchange.example/problems/"


@pytest.fixture
async def funded(api: SignedApi, partners: Partners) -> Partners:
    """Alice and Bob enrolled at Sky, Alice with 1 000 points."""
    for ref in ("alice", "bob"):
        await api.post("/v1/members", {"member_ref": ref}, as_=partners.sky)
    await api.post("/v1/issuances", {"member_ref": "alice", "points": 1000}, as_=partners.sky)
    return partners


@pytest.mark.parametrize("points", BAD_POINTS, ids=repr)
async def test_bad_points_are_invalid_amount_and_post_nothing(
    api: SignedApi, funded: Partners, points: object
) -> None:
    hold = (
        await api.post("/v1/holds", {"member_ref": "alice", "points": 10}, as_=funded.sky)
    ).json()["hold"]["id"]
    before = await api.ledger_size()
    attempts = [
        ("/v1/issuances", {"member_ref": "alice", "points": points}),
        ("/v1/redemptions", {"member_ref": "alice", "points": points}),
        ("/v1/transfers", {"from_member_ref": "alice", "to_member_ref": "bob", "points": points}),
        ("/v1/holds", {"member_ref": "alice", "points": points}),
    ]
    if points is not None:  # "points": null is "capture all the hold", which is allowed
        attempts.append((f"/v1/holds/{hold}/capture", {"points": points}))
    for path, body in attempts:
        answer = await api.post(path, body, as_=funded.sky)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == PROBLEMS + "invalid-amount", (path, problem)
        assert problem["title"] == "Points must be a whole number from 1 to 10^12"
        assert problem["field"] == "points"
    assert await api.ledger_size() == before


async def test_a_reversal_of_bad_points_posts_nothing(api: SignedApi, funded: Partners) -> None:
    issued = await api.post("/v1/issuances", {"member_ref": "bob", "points": 5}, as_=funded.sky)
    before = await api.ledger_size()
    for points in (0, -5, 2.5, "5", False, 10**13):
        answer = await api.post(
            f"/v1/transactions/{issued.json()['transaction']['id']}/reversal",
            {"points": points},
            as_=funded.sky,
        )
        assert answer.status_code == 422
        assert answer.json()["type"] == PROBLEMS + "invalid-amount"
    assert await api.ledger_size() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"member_ref": "alice", "points": 5, "refrence": "typo"}, "body"),
        ({"points": 5}, "body"),
        ({"member_ref": 7, "points": 5}, "member_ref"),
        ({"member_ref": "alice", "points": 5, "reference": "x" * 201}, "reference"),
        ({"member_ref": "alice", "points": 5, "reference": "a\x00b"}, "reference"),
        ([], "body"),
    ],
    ids=["unknown field", "missing member", "member not a string", "long ref", "NUL", "list"],
)
async def test_bodies_of_the_wrong_shape_are_invalid_request(
    api: SignedApi, funded: Partners, body: object, field: str
) -> None:
    before = await api.ledger_size()
    answer = await api.post("/v1/issuances", body, as_=funded.sky)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == PROBLEMS + "invalid-request"
    assert problem["title"] == "The request is not valid"
    assert [error["key"] for error in problem["errors"]] == [field]
    assert await api.ledger_size() == before


@pytest.mark.parametrize(
    "member_ref", [" alice", "", "x" * 129, "tab\there"], ids=["space", "empty", "long", "tab"]
)
async def test_bad_member_refs_are_refused(
    api: SignedApi, funded: Partners, member_ref: str
) -> None:
    answer = await api.post("/v1/members", {"member_ref": member_ref}, as_=funded.sky)
    assert answer.status_code == 422
    assert answer.json()["type"] in {PROBLEMS + "invalid-input", PROBLEMS + "invalid-request"}


async def test_a_body_that_is_not_json_is_a_400(api: SignedApi, funded: Partners) -> None:
    before = await api.ledger_size()
    answer = await api.post("/v1/issuances", body=b'{"member_ref": "alice",', as_=funded.sky)
    assert answer.status_code == 400
    assert answer.json()["type"] == PROBLEMS + "bad-request"
    assert await api.ledger_size() == before


async def test_bad_query_values_are_invalid_request(api: SignedApi, funded: Partners) -> None:
    for query in ("limit=0", "limit=501", "limit=ten"):
        answer = await api.get("/v1/members/alice/transactions", as_=funded.sky, query=query)
        assert answer.status_code == 422, query
        assert answer.json()["type"] == PROBLEMS + "invalid-request"
    too_many = await api.get("/v1/members/alice/transactions", as_=funded.sky, query="limit=1000")
    # The cause is named, with the maximum (issue 16: it said "Validation failed" alone).
    assert too_many.json()["detail"] == "query limit: Expected `int` <= 500"
    assert too_many.json()["errors"][0]["maximum"] == 500
    answer = await api.get("/v1/members/alice/transactions", as_=funded.sky, query="cursor=zzz")
    assert answer.status_code == 400
    assert answer.json()["type"] == PROBLEMS + "invalid-cursor"


async def test_unknown_routes_and_methods_are_problems(api: SignedApi, funded: Partners) -> None:
    missing = await api.get("/v1/nothing-here", as_=funded.sky)
    assert missing.status_code == 404
    assert missing.json() == {"type": PROBLEMS + "not-found", "title": "Not Found", "status": 404}
    wrong = await api.request("DELETE", "/v1/issuances", as_=funded.sky)
    assert wrong.status_code == 405
    assert wrong.json()["type"] == PROBLEMS + "method-not-allowed"
    assert wrong.headers["content-type"] == "application/problem+json"
