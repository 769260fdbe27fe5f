"""Refusals are answers, not incidents: a 4xx domain refusal leaves no error-level "Uncaught
exception" line (with its stack trace) in the service's log, which an operator reads for real
failures."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Partners, SignedApi


async def test_a_refusal_is_not_logged_as_an_uncaught_exception(
    api: SignedApi, partners: Partners, capfd: pytest.CaptureFixture[str]
) -> None:
    sky = partners.sky
    assert (await api.post("/v1/members", {"member_ref": "alice"}, as_=sky)).status_code == 201
    capfd.readouterr()
    short = await api.post("/v1/redemptions", {"member_ref": "alice", "points": 5}, as_=sky)
    missing = await api.post("/v1/redemptions", {"member_ref": "nobody", "points": 5}, as_=sky)
    assert short.json()["type"].endswith("/insufficient-points")
    assert (short.status_code, missing.status_code) == (422, 404)
    logged = capfd.readouterr()
    assert "Uncaught exception" not in logged.out + logged.err
    assert "Traceback" not in logged.out + logged.err
