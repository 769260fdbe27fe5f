"""Issue 15, finding 3: webhooks go only to public addresses, checked at registration and again
at connection (to the address checked); deliveries give up into a dead letter their partner
sees, with the last error, and can replay."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.outbox import OutboxEvent, enqueue_event
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from partners.models import Partner
from settlement.webhook_addresses import WebhookPolicy
from settlement.webhooks import deliver_due_webhooks, set_webhook_url
from tests.integration.conftest import Partners, SignedApi
from tests.integration.test_webhooks import Receiver, development, receiver

__all__ = ["receiver"]  # the fixture, imported for pytest

PROBLEMS = "https://exchange.example/problems/"

SSRF = [
    "https://127.0.0.1:9443/admin",
    "https://localhost/hooks",
    "https://[::1]/hooks",
    "https://0x7f000001/hooks",
    "https://2130706433/hooks",
    "https://0177.0.0.1/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://127.0.0.1:5432/",
    "https://10.1.2.3/hooks",
    "https://192.168.0.10/hooks",
    "https://100.64.0.1/hooks",
    "https://[fd00::1]/hooks",
    "https://[fe80::1]/hooks",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://224.0.0.1/hooks",
    "https://0.0.0.0/hooks",
    "https://240.0.0.1/hooks",
    "https://8.8.8.8:22/hooks",  # public, but not a webhook port
    "http://8.8.8.8/hooks",  # public, but not https
]


async def test_every_internal_address_is_refused_at_registration(
    api: SignedApi, partners: Partners, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for url in SSRF:
        answer = await api.request("PUT", "/v1/partners/me/webhook", json_body={"url": url},
                                   as_=partners.sky)  # fmt: skip
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["type"] == PROBLEMS + "invalid-input", url
    async with sessions() as session:
        assert (await session.get(Partner, partners.sky.partner.id)).webhook_url is None  # type: ignore[union-attr]
    # Plain http does not open loopback either, even where http is allowed.
    async with sessions() as session, session.begin():
        for url in ("http://127.0.0.1:8443/admin", "http://localhost:443/admin"):
            try:
                await set_webhook_url(
                    session, partners.sky.partner.id, url,
                    policy=WebhookPolicy(allow_http=True, ports=frozenset({443, 8443})),
                )  # fmt: skip
            except Exception as refused:
                assert "not a public address" in str(refused), url
            else:
                raise AssertionError(f"{url} was accepted")


async def test_a_name_that_resolves_to_loopback_at_delivery_is_not_connected_to(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    receiver: tuple[Receiver, str],
    partners: Partners,
) -> None:
    """Registered while the name resolved to a public address; by delivery it resolves to
    127.0.0.1, where a server listens (DNS rebinding): the delivery is refused before any
    connection and records why. ``localhost`` (a URL stored before the check) likewise."""
    state, base = receiver
    port = int(base.rsplit(":", 1)[1])
    settings = replace(settings, webhook_allow_http=True, webhook_ports=(port,))
    sky = partners.sky.partner.id

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    async def rebound(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    policy = WebhookPolicy.of(settings)
    async with sessions() as session, session.begin():
        url = f"http://hooks.sky.test:{port}/hooks"
        await set_webhook_url(session, sky, url, policy=policy, resolve=public)
        event = await enqueue_event(session, sky, "conversion.credited", {"points": 1})
    async with httpx.AsyncClient() as client:
        report = await deliver_due_webhooks(
            sessions, settings=settings, keys=keys, client=client, resolve=rebound
        )
        assert (report.delivered, report.failed) == (0, 1)
        async with sessions() as session, session.begin():
            row = await session.get(OutboxEvent, event)
            assert row is not None and row.last_error is not None
            assert row.last_error.startswith("refused: webhook host 'hooks.sky.test' is not a")
            await session.execute(
                update(Partner)
                .where(Partner.id == sky)
                .values(webhook_url=f"http://localhost:{port}/h")
            )
            await session.execute(
                update(OutboxEvent).where(OutboxEvent.id == event).values(next_attempt_at=utcnow())
            )
        report = await deliver_due_webhooks(sessions, settings=settings, keys=keys, client=client)
        assert (report.delivered, report.failed) == (0, 1)
    assert state.attempts == {}
    assert state.refused == []


async def test_a_dead_lettered_delivery_is_visible_to_its_partner_and_replayed(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    receiver: tuple[Receiver, str],
) -> None:
    """The receiver fails twice; with two attempts allowed the event is dead, shown to Sky Air
    (and not to Hotel Co) with ``HTTP 500``; no round sends it again until Sky Air replays it,
    then it is delivered."""
    state, base = receiver
    settings = replace(development(settings), webhook_max_attempts=2)
    sky = partners.sky.partner.id
    async with sessions() as session, session.begin():
        await set_webhook_url(session, sky, f"{base}/hooks", policy=WebhookPolicy.of(settings))
        event = await enqueue_event(session, sky, "conversion.credited", {"points": 1})
    clock = utcnow()
    async with httpx.AsyncClient() as client:
        for _ in range(4):
            await deliver_due_webhooks(sessions, settings=settings, keys=keys, client=client,
                                       now=clock)  # fmt: skip
            clock += dt.timedelta(hours=2)
        assert state.attempts[str(event)] == [500, 500]

        listed = await api.get("/v1/partners/me/webhook/deliveries", as_=partners.sky)
        assert listed.status_code == 200, listed.text
        [dead] = listed.json()
        assert (dead["event_id"], dead["state"], dead["attempts"]) == (str(event), "dead", 2)
        assert dead["last_error"] == "HTTP 500"
        assert dead["dead_at"] is not None and dead["next_attempt_at"] is None
        only_dead = await api.get("/v1/partners/me/webhook/deliveries", as_=partners.sky,
                                  query="state=dead")  # fmt: skip
        assert [d["event_id"] for d in only_dead.json()] == [str(event)]
        theirs = await api.get("/v1/partners/me/webhook/deliveries", as_=partners.htl)
        assert theirs.json() == []
        path = f"/v1/partners/me/webhook/deliveries/{event}/replay"
        not_theirs = await api.post(path, json_body={}, as_=partners.htl)
        assert (not_theirs.status_code, not_theirs.json()["type"]) == (
            404, PROBLEMS + "delivery-not-found"
        )  # fmt: skip

        replayed = await api.post(path, json_body={}, as_=partners.sky)
        assert replayed.status_code == 200, replayed.text
        assert (replayed.json()["state"], replayed.json()["attempts"]) == ("pending", 0)
        again = await api.post(path, json_body={}, as_=partners.sky)
        assert (again.status_code, again.json()["type"]) == (409, PROBLEMS + "delivery-not-dead")
        report = await deliver_due_webhooks(sessions, settings=settings, keys=keys, client=client)
        assert (report.delivered, report.failed) == (1, 0)
    assert state.attempts[str(event)] == [500, 500, 200]
    listed = await api.get("/v1/partners/me/webhook/deliveries", as_=partners.sky)
    assert [(d["state"], d["last_error"]) for d in listed.json()] == [("delivered", None)]
