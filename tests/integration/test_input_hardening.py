"""Issue 15, the input findings: duplicate JSON keys are a 400 on every route; a cursor holding
an absurd position is a 400, never a 500; control characters a caller sends are escaped in the
log, console and JSON alike."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from exchange.observability import structlog_plugin
from exchange.settings import Settings
from tests.integration.conftest import Partners, SignedApi

PROBLEMS = "https://exchange.example/problems/"


async def test_duplicate_json_keys_are_a_bad_request(api: SignedApi, partners: Partners) -> None:
    """``{"points": 1, "points": 1000000}`` would issue a million (the last key wins): refused,
    nested objects and routes that take no body included, and nothing is posted."""
    await api.post("/v1/members", {"member_ref": "a2"}, as_=partners.sky)
    before = await api.ledger_size()
    bodies = {
        "/v1/issuances": b'{"member_ref":"a2","points":1,"points":1000000}',
        "/v1/members": b'{"member_ref":"a3","member_ref":"a2"}',
        "/v1/batches": b'{"operations":[{"type":"issue","idempotency_key":"i1",'
        b'"member_ref":"a2","points":1,"points":1000000}]}',
    }
    for path, body in bodies.items():
        answer = await api.post(path, body=body, as_=partners.sky)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["type"] == PROBLEMS + "bad-request"
    answer = await api.request("GET", "/v1/partners/me", body=b'{"a":1,"a":2}', as_=partners.sky)
    assert answer.status_code == 400
    assert await api.ledger_size() == before
    member = await api.get("/v1/members/a2", as_=partners.sky)
    assert member.json()["balance"] == 0


async def test_a_huge_cursor_is_a_bad_request(api: SignedApi, partners: Partners) -> None:
    await api.post("/v1/members", {"member_ref": "a2"}, as_=partners.sky)
    cursors = [
        {"seq": 99999999999999999999999},
        {"seq": 2**63},
        {"seq": -(2**70)},
        {"seq": 1e308},
    ]
    for position in cursors:
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
        answer = await api.get(
            "/v1/members/a2/transactions", as_=partners.sky, query=f"cursor={cursor}"
        )
        assert answer.status_code == 400, (position, answer.text)
        assert answer.json()["type"] == PROBLEMS + "invalid-cursor"
    answer = await api.get(
        "/v1/members/a2/transactions", as_=partners.sky, query="cursor=" + "A" * 10_000
    )
    assert answer.status_code == 400


@pytest.mark.parametrize("log_json", [False, True], ids=["console", "json"])
def test_control_characters_are_escaped_in_the_log(settings: Settings, log_json: bool) -> None:
    """The line the signature layer logs for an unauthenticated path full of terminal escapes,
    vertical tab, form feed, NEL and U+2028, through the service's own processors and renderer
    (console or JSON): the characters appear as visible escapes, never raw."""
    plugin = structlog_plugin(dataclasses.replace(settings, log_json=log_json))
    processors = plugin._config.structlog_logging_config.processors or []
    path = "/v1/members/x\x1b[1A\x1b[2K\x0b\x0c\u2028\x85y"
    event: Any = {"event": "request signature refused", "path": path, "method": "GET"}
    for processor in processors:
        event = processor(None, "info", event)
    line = event if isinstance(event, str) else event.decode()
    assert "request signature refused" in line
    for raw in ("\x1b", "\x0b", "\x0c", "\u2028", "\x85"):
        assert raw not in line
    assert "\\x1b[1A" in line or "\\\\x1b[1A" in line
