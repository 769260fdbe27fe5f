"""Webhooks against a real HTTP server on 127.0.0.1 that refuses the first attempts: every event
arrives, signed by the exchange, at least once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import InvalidInput, PartnerNotFound
from exchange.ledger.parties import PartnerInfo
from exchange.outbox import OutboxEvent, enqueue_event
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from partners.httpsig import SignatureInvalid, VerifyKey, verify_request
from settlement.runs import settle_day
from settlement.webhook_addresses import WebhookPolicy
from settlement.webhooks import EVENT_ID_HEADER, deliver_due_webhooks, set_webhook_url
from tests.conftest import make_partner
from tests.integration.settlement_support import SteppedCalendar, convert

DEVELOPMENT = WebhookPolicy(allow_http=True, allow_private_addresses=True, ports=frozenset())
"""What a development set-up allows: the receivers here are http on 127.0.0.1, any port."""
FAILURES = 2
"""How many attempts at each event the receiver answers with a 500."""


def development(settings: Settings) -> Settings:
    """Settings under which deliveries may go to http://127.0.0.1 on any port."""
    return replace(
        settings, webhook_allow_http=True, webhook_allow_private_addresses=True, webhook_ports=()
    )


@dataclass
class Receiver:
    """What the partner's server saw: per event id, each attempt's outcome."""

    keys: dict[str, VerifyKey]
    attempts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    nonces: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> int:
        parts = urlsplit(target)
        try:
            verified = verify_request(
                method=method, path=parts.path, query=parts.query, authority=None,
                headers=headers, body=body, keys=self.keys, now=int(time.time()),
            )  # fmt: skip
        except SignatureInvalid as error:
            with self.lock:
                self.refused.append(str(error))
            return 401
        event = json.loads(body)
        if headers.get(EVENT_ID_HEADER) != event["event_id"]:
            return 400
        with self.lock:
            self.nonces.append(verified.nonce)
            seen = self.attempts[event["event_id"]]
            status = 500 if len(seen) < FAILURES else 200
            seen.append(status)
            self.bodies[event["event_id"]] = event
            self.paths[event["event_id"]] = target
        return status


@pytest.fixture
def receiver(keys: ExchangeKeys) -> Iterator[tuple[Receiver, str]]:
    raw = keys.published[keys.key_id].public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    state = Receiver({keys.key_id: VerifyKey(keys.key_id, "ed25519", raw)})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.handle("POST", self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_every_event_arrives_signed_despite_failures(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    receiver: tuple[Receiver, str],
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> None:
    state, base = receiver
    settings = replace(
        development(settings), webhook_retry_base_seconds=1, webhook_retry_max_seconds=4
    )
    operator = await make_partner(sessions, settings, "operator", "Operator")
    async with sessions() as session, session.begin():
        await set_webhook_url(session, sky.id, f"{base}/hooks/sky", policy=DEVELOPMENT)
        await set_webhook_url(session, htl.id, f"{base}/hooks/htl?tenant=7", policy=DEVELOPMENT)

    await convert(sessions, sky, htl, operator, 59_400_000, 1_200_000)
    async with sessions() as session, session.begin():
        credited = await enqueue_event(
            session, htl.id, "conversion.credited", {"member_ref": "bob", "points": 7_425}
        )
    await asyncio.sleep(0.002)
    calendar = SteppedCalendar(dt.date(2026, 11, 20), utcnow(), dt.timedelta(hours=1))
    batch = await settle_day(
        sessions, dt.date(2026, 11, 20), settings=settings, keys=keys, calendar=calendar
    )

    clock = utcnow()
    rounds = []
    async with httpx.AsyncClient() as client:
        for _ in range(FAILURES + 3):
            report = await deliver_due_webhooks(
                sessions, settings=settings, keys=keys, client=client, now=clock
            )
            rounds.append((report.delivered, report.failed))
            clock += dt.timedelta(seconds=10)
    # SKY's and HTL's settlement.ready and HTL's conversion.credited; the operator registered
    # no URL, so its event waits.
    assert rounds == [(0, 3), (0, 3), (3, 0), (0, 0), (0, 0)]
    assert state.refused == []
    assert len(state.nonces) == len(set(state.nonces)) == 9

    async with sessions() as session:
        rows = (await session.execute(select(OutboxEvent))).scalars().all()
    by_partner = {(row.partner_id, row.event_type): row for row in rows}
    assert set(by_partner) == {
        (sky.id, "settlement.ready"),
        (htl.id, "settlement.ready"),
        (htl.id, "conversion.credited"),
        (operator.id, "settlement.ready"),
    }
    waiting = by_partner[operator.id, "settlement.ready"]
    assert (waiting.attempts, waiting.delivered_at) == (0, None)
    sent = [(sky.id, "settlement.ready"), (htl.id, "settlement.ready")]
    for key in [*sent, (htl.id, "conversion.credited")]:
        row = by_partner[key]
        assert state.attempts[str(row.id)] == [500, 500, 200]
        assert (row.attempts, row.last_error) == (3, None)
        assert row.delivered_at is not None

    ready = state.bodies[str(by_partner[sky.id, "settlement.ready"].id)]
    assert ready["event_type"] == "settlement.ready"
    assert ready["partner_id"] == str(sky.id)
    assert ready["data"] == {
        "batch_id": batch.id,
        "business_date": "2026-11-20",
        "currency": "EUR",
        "net_micros": -60_600_000,
        "payout_minor": -6_060,
        "carry_out_micros": 0,
        "statement_sha256": ready["data"]["statement_sha256"],
    }
    assert len(ready["data"]["statement_sha256"]) == 64
    assert state.paths[str(credited)] == "/hooks/htl?tenant=7"
    assert state.bodies[str(credited)]["data"] == {"member_ref": "bob", "points": 7_425}

    # Once the operator registers a URL, its event goes out too.
    async with sessions() as session, session.begin():
        await set_webhook_url(session, operator.id, f"{base}/hooks/op", policy=DEVELOPMENT)
    async with httpx.AsyncClient() as client:
        for _ in range(FAILURES + 1):
            await deliver_due_webhooks(
                sessions, settings=settings, keys=keys, client=client, now=clock
            )
            clock += dt.timedelta(seconds=10)
    assert state.attempts[str(waiting.id)] == [500, 500, 200]


async def test_an_unreachable_partner_is_retried_with_backoff(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    sky: PartnerInfo,
) -> None:
    settings = replace(
        development(settings), webhook_retry_base_seconds=10, webhook_retry_max_seconds=25
    )
    async with sessions() as session, session.begin():
        # A port nothing listens on: connection refused.
        await set_webhook_url(session, sky.id, "http://127.0.0.1:9/hooks", policy=DEVELOPMENT)
        event = await enqueue_event(session, sky.id, "conversion.credited", {"points": 1})
    clock = utcnow()
    waits = []
    async with httpx.AsyncClient() as client:
        for _ in range(4):
            report = await deliver_due_webhooks(
                sessions, settings=settings, keys=keys, client=client, now=clock
            )
            assert (report.delivered, report.failed) == (0, 1)
            async with sessions() as session:
                row = await session.get(OutboxEvent, event)
                assert row is not None and row.last_error
                waits.append(round((row.next_attempt_at - clock).total_seconds()))
                clock = row.next_attempt_at
            # Not due before its time.
            early = await deliver_due_webhooks(
                sessions, settings=settings, keys=keys, client=client,
                now=clock - dt.timedelta(seconds=1),
            )  # fmt: skip
            assert (early.delivered, early.failed) == (0, 0)
    assert waits == [10, 20, 25, 25]


async def public(host: str, port: int) -> list[str]:
    """A resolver under which every name is a public address (sky.example resolves nowhere)."""
    return ["93.184.215.14"]


async def test_webhook_urls_are_checked(
    sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo
) -> None:
    async with sessions() as session, session.begin():
        assert await set_webhook_url(
            session, sky.id, "https://sky.example/hooks", resolve=public
        ) == ("https://sky.example/hooks")
        for bad in [
            "http://sky.example/hooks",
            "ftp://sky.example/",
            "https://user:pw@sky.example/",
            "https:///nohost",
            "https://sky.example/#frag",
            " https://sky.example/",
            "https://sky.example/" + "x" * 2000,
        ]:
            with pytest.raises(InvalidInput):
                await set_webhook_url(session, sky.id, bad, resolve=public)
        assert await set_webhook_url(session, sky.id, None) is None
        with pytest.raises(PartnerNotFound):
            await set_webhook_url(session, uuid.UUID(int=1), "https://x.example/", resolve=public)
        with pytest.raises(ValueError):
            await enqueue_event(session, sky.id, "no.such.event", {})
