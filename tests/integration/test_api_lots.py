"""Expiry policies, the next expiry of a member and the liability report over the signed API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.policies import add_months
from tests.integration.conftest import Partners, SignedApi
from tests.integration.pricing_support import enrol, problem_type, set_value


async def test_policy_next_expiry_and_liability(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sky = partners.sky
    set_ = await api.post("/v1/expiry-policies", {"kind": "months", "period": 1}, as_=sky)
    assert set_.status_code == 201, set_.text
    assert (set_.json()["kind"], set_.json()["period"], set_.json()["currency"]) == (
        "months", 1, "SKY"
    )  # fmt: skip
    listed = (await api.get("/v1/expiry-policies", as_=sky)).json()
    assert listed["in_force"]["id"] == set_.json()["id"]
    assert [v["id"] for v in listed["versions"]] == [set_.json()["id"]]
    # The other brand has none: its points never expire.
    assert (await api.get("/v1/expiry-policies", as_=partners.htl)).json()["in_force"] is None

    await set_value(api, partners.operator, "SKY", 12_000)
    await enrol(api, sky, "alice", 1_000)
    member = (await api.get("/v1/members/alice", as_=sky)).json()
    assert member["next_expiry_points"] == 1_000
    assert member["next_expiry_at"] is not None

    before = (await api.get("/v1/liability", as_=sky)).json()
    assert (before["points_outstanding"], before["value_micros"]) == (1_000, 12_000_000)
    assert before["breakage"]["points"] == 0

    await expire_lots(sessions, add_months(utcnow(), 2))
    after = (await api.get("/v1/liability", as_=sky)).json()
    assert (after["points_outstanding"], after["value_micros"]) == (0, 0)
    member = (await api.get("/v1/members/alice", as_=sky)).json()
    assert (member["balance"], member["next_expiry_at"], member["next_expiry_points"]) == (
        0, None, 0
    )  # fmt: skip


async def test_bad_policies_are_refused(api: SignedApi, partners: Partners) -> None:
    for body in (
        {"kind": "months"},
        {"kind": "never", "period": 3},
        {"kind": "weeks", "period": 3},
        {"kind": "months", "period": 0},
        {"kind": "months", "period": 2, "effective_at": "2001-01-01T00:00:00Z"},
    ):
        answer = await api.post("/v1/expiry-policies", body, as_=partners.sky)
        assert answer.status_code in (400, 422), (body, answer.text)
        assert problem_type(answer)
    # Only a brand has a policy.
    answer = await api.post("/v1/expiry-policies", {"kind": "never"}, as_=partners.operator)
    assert answer.status_code == 403, answer.text
