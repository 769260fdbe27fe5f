"""Webhooks: events for partners, kept in an outbox and sent, signed, until acknowledged.

An event is written to ``outbox_event`` by :func:`enqueue_event` inside the transaction that
causes it (a settlement batch, a conversion), so it exists exactly when its cause does. The
delivery worker (:func:`deliver_due_webhooks`) then POSTs it to the partner's ``webhook_url``:

- Claiming. A worker takes due events with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has
  one writer at a time) and, in that short transaction, moves their ``next_attempt_at`` past
  the delivery timeout: a lease. The POST happens outside any database transaction; if the
  worker dies mid-way, the lease runs out and another worker sends the event again.
- At least once. An event counts as delivered on a 2xx answer only; anything else (an error
  status, a redirect, a timeout, a refused connection, an address that is not public) is
  retried after ``base * 2**(attempts - 1)`` seconds, at most ``webhook_retry_max_seconds``,
  until ``webhook_max_attempts``: then it is dead-lettered. The partner lists its deliveries
  with their state and last error (``GET /v1/partners/me/webhook/deliveries``) and replays a
  dead one. A receiver may see an event more than once and must deduplicate on ``event_id``.
- Only to public addresses (:mod:`settlement.webhook_addresses`): checked when the URL is
  registered and again before each attempt, and the POST goes to the address checked, with no
  redirect followed.
- Signed. Each request carries an RFC 9421 signature by the exchange's Ed25519 key (``keyid``
  the exchange key id from ``GET /v1/keys``, ``alg`` ed25519, ``created``, a fresh ``nonce``)
  covering ``@method``, ``@path``, ``@query`` when there is one, and ``content-digest``
  (RFC 9530, sha-256 of the body). A receiver checks it exactly as the exchange checks a
  partner's request (``partners.httpsig.verify_request``).
- Body: ``{"event_id", "event_type", "partner_id", "created_at", "data"}`` as canonical JSON;
  the id is also in the ``Exchange-Event-Id`` header and the type in ``Exchange-Event-Type``.
- Events of a partner without a webhook URL wait; they are sent once it registers one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import Table, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import DeliveryNotDead, DeliveryNotFound, PartnerNotFound
from exchange.outbox import outbox_t
from exchange.settings import Settings
from exchange.signing import ExchangeKeys, canonical_json
from partners.httpsig import sign_request
from partners.models import Partner
from settlement.webhook_addresses import (
    PRODUCTION,
    AddressRefused,
    Resolver,
    WebhookPolicy,
    checked_target,
    resolve_host,
)

EVENT_ID_HEADER = "Exchange-Event-Id"
EVENT_TYPE_HEADER = "Exchange-Event-Type"
_ERROR_LENGTH = 500

partner_t = cast(Table, Partner.__table__)


async def set_webhook_url(
    session: AsyncSession,
    partner_id: uuid.UUID,
    url: str | None,
    *,
    policy: WebhookPolicy = PRODUCTION,
    resolve: Resolver = resolve_host,
) -> str | None:
    """Register (or, with ``None``, remove) where a partner's events are sent; the address must
    pass :func:`settlement.webhook_addresses.checked_target` now (and will at each delivery)."""
    if url is not None:
        url = (await checked_target(url, policy, resolve)).url
    result = await session.execute(
        update(partner_t)
        .where(partner_t.c.id == partner_id)
        .values(webhook_url=url)
        .returning(partner_t.c.id)
    )
    if result.first() is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return url


def retry_delay(attempts: int, settings: Settings) -> dt.timedelta:
    """The wait after the ``attempts``-th failed attempt: doubling, capped."""
    exponent = min(max(attempts - 1, 0), 32)
    seconds = min(
        settings.webhook_retry_base_seconds * 2**exponent, settings.webhook_retry_max_seconds
    )
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class ClaimedEvent:
    id: uuid.UUID
    partner_id: uuid.UUID
    event_type: str
    payload: str
    created_at: dt.datetime
    attempts: int
    url: str


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    failed: int


def webhook_request(event: ClaimedEvent, keys: ExchangeKeys) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one signed delivery."""
    body = canonical_json(
        {
            "event_id": str(event.id),
            "event_type": event.event_type,
            "partner_id": str(event.partner_id),
            "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
            "data": json.loads(event.payload),
        }
    )
    target = httpx.URL(event.url)
    headers = {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: str(event.id),
        EVENT_TYPE_HEADER: event.event_type,
    }
    headers.update(
        sign_request(
            method="POST",
            path=target.raw_path.split(b"?", 1)[0].decode("ascii") or "/",
            query=target.query.decode("ascii"),
            authority=None,
            headers=headers,
            body=body,
            key_id=keys.key_id,
            alg="ed25519",
            key=keys.signing_key,
            created=int(time.time()),
            nonce=secrets.token_urlsafe(16),
        )
    )
    return body, headers


async def _claim(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, now: dt.datetime
) -> list[ClaimedEvent]:
    lease = dt.timedelta(seconds=settings.webhook_timeout_seconds + 30)
    async with session_factory() as session, session.begin():
        rows = (
            await session.execute(
                select(
                    outbox_t.c.id,
                    outbox_t.c.partner_id,
                    outbox_t.c.event_type,
                    outbox_t.c.payload,
                    outbox_t.c.created_at,
                    outbox_t.c.attempts,
                    partner_t.c.webhook_url,
                )
                .join(partner_t, partner_t.c.id == outbox_t.c.partner_id)
                .where(
                    outbox_t.c.delivered_at.is_(None),
                    outbox_t.c.dead_at.is_(None),
                    outbox_t.c.next_attempt_at <= now,
                    partner_t.c.webhook_url.is_not(None),
                )
                .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
                .limit(settings.webhook_batch_size)
                .with_for_update(skip_locked=True, of=outbox_t)
            )
        ).all()
        if rows:
            await session.execute(
                update(outbox_t)
                .where(outbox_t.c.id.in_([row.id for row in rows]))
                .values(attempts=outbox_t.c.attempts + 1, next_attempt_at=now + lease)
            )
    return [
        ClaimedEvent(
            row.id, row.partner_id, row.event_type, row.payload, row.created_at,
            row.attempts + 1, row.webhook_url,
        )
        for row in rows
    ]  # fmt: skip


async def _send(
    client: httpx.AsyncClient,
    event: ClaimedEvent,
    keys: ExchangeKeys,
    settings: Settings,
    resolve: Resolver,
) -> str | None:
    """POST one event to the address its URL resolves to now, if that is allowed; ``None``
    when the partner acknowledged it, else why not."""
    try:
        target = await checked_target(event.url, WebhookPolicy.of(settings), resolve)
    except AddressRefused as refused:
        return f"refused: {refused.detail}"[:_ERROR_LENGTH]
    body, headers = webhook_request(event, keys)
    url = httpx.URL(target.url)
    headers["Host"] = url.netloc.decode("ascii")
    address = str(target.address)
    pinned = url.copy_with(host=address)
    try:
        response = await client.post(
            pinned,
            content=body,
            headers=headers,
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            extensions={"sni_hostname": target.host},
        )
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:_ERROR_LENGTH]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _outcome(
    event: ClaimedEvent, error: str | None, settings: Settings, now: dt.datetime, done: dt.datetime
) -> tuple[Any, dict[str, Any]]:
    """The update that records one attempt: delivered, retried later, or dead-lettered."""
    if error is None:
        return outbox_t.c.id == event.id, {"delivered_at": done, "last_error": None}
    # Only while this worker's claim holds: if the lease ran out and another worker claimed
    # the event since, the attempt count moved on and this failure is stale.
    condition = and_(outbox_t.c.id == event.id, outbox_t.c.attempts == event.attempts)
    if event.attempts >= settings.webhook_max_attempts:
        return condition, {"dead_at": done, "last_error": error}
    retry = max(done, now) + retry_delay(event.attempts, settings)
    return condition, {"next_attempt_at": retry, "last_error": error}


async def deliver_due_webhooks(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    settings: Settings,
    keys: ExchangeKeys,
    client: httpx.AsyncClient,
    now: dt.datetime | None = None,
    resolve: Resolver = resolve_host,
) -> DeliveryReport:
    """Send one round of due events (at most ``webhook_batch_size``) and record the outcomes."""
    now = now or utcnow()
    events = await _claim(session_factory, settings, now)
    if not events:
        return DeliveryReport(0, 0)
    outcomes = await asyncio.gather(
        *(_send(client, event, keys, settings, resolve) for event in events)
    )
    done = utcnow()
    async with session_factory() as session, session.begin():
        for event, error in zip(events, outcomes, strict=True):
            condition, values = _outcome(event, error, settings, now, done)
            await session.execute(
                update(outbox_t)
                .where(condition, outbox_t.c.delivered_at.is_(None))
                .values(**values)
            )
    failed = sum(1 for error in outcomes if error is not None)
    return DeliveryReport(len(events) - failed, failed)


@dataclass(frozen=True)
class Delivery:
    """One event for a partner's webhook, as the partner sees it."""

    event_id: uuid.UUID
    event_type: str
    created_at: dt.datetime
    state: str  # "pending", "delivered" or "dead"
    attempts: int
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    dead_at: dt.datetime | None
    last_error: str | None


_DELIVERY_COLUMNS = (
    outbox_t.c.id,
    outbox_t.c.event_type,
    outbox_t.c.created_at,
    outbox_t.c.attempts,
    outbox_t.c.next_attempt_at,
    outbox_t.c.delivered_at,
    outbox_t.c.dead_at,
    outbox_t.c.last_error,
)


def _delivery(row: Any) -> Delivery:
    state = "delivered" if row.delivered_at else "dead" if row.dead_at else "pending"
    return Delivery(
        row.id, row.event_type, row.created_at, state, row.attempts,
        row.next_attempt_at if state == "pending" else None,
        row.delivered_at, row.dead_at, row.last_error,
    )  # fmt: skip


async def list_deliveries(
    session: AsyncSession, partner_id: uuid.UUID, *, state: str | None = None, limit: int = 50
) -> list[Delivery]:
    """The partner's events, newest first, with their state and last error."""
    query = select(*_DELIVERY_COLUMNS).where(outbox_t.c.partner_id == partner_id)
    if state == "dead":
        query = query.where(outbox_t.c.dead_at.is_not(None))
    elif state == "delivered":
        query = query.where(outbox_t.c.delivered_at.is_not(None))
    elif state == "pending":
        query = query.where(outbox_t.c.delivered_at.is_(None), outbox_t.c.dead_at.is_(None))
    query = query.order_by(outbox_t.c.id.desc()).limit(max(1, min(limit, 500)))
    return [_delivery(row) for row in await session.execute(query)]


async def replay_delivery(
    session: AsyncSession, partner_id: uuid.UUID, event_id: uuid.UUID, *, now: dt.datetime
) -> Delivery:
    """Send a dead-lettered event again, from its first attempt (its last error is kept until
    the next attempt). Another partner's event is not found; one not dead is a conflict."""
    found = (
        await session.execute(
            select(*_DELIVERY_COLUMNS).where(
                outbox_t.c.id == event_id, outbox_t.c.partner_id == partner_id
            )
        )
    ).first()
    if found is None:
        raise DeliveryNotFound(f"no webhook delivery {event_id}")
    revived = (
        await session.execute(
            update(outbox_t)
            .where(outbox_t.c.id == event_id, outbox_t.c.dead_at.is_not(None))
            .values(dead_at=None, attempts=0, next_attempt_at=now)
            .returning(*_DELIVERY_COLUMNS)
        )
    ).first()
    if revived is None:
        raise DeliveryNotDead(f"webhook delivery {event_id} is {_delivery(found).state}")
    return _delivery(revived)
