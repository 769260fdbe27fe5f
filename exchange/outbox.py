"""The outbox: events for partners' webhooks, written in the transaction that caused them.

Any feature queues an event here; ``settlement.webhooks`` reads the table and delivers each
event at least once. Keeping the table in the core lets a feature announce something without
importing the sender.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow, uuid7
from exchange.dialect import insert_columns
from exchange.signing import canonical_json

EVENT_TYPES = frozenset(
    {"settlement.ready", "conversion.credited", "points.expiring", "points.expired"}
)


class OutboxEvent(Base):
    """An event for a partner's webhook, written in the transaction that caused it and sent by
    ``settlement.webhooks`` until the partner acknowledges it (at least once)."""

    __tablename__ = "outbox_event"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts"),
        Index(
            "ix_outbox_event_due",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
        Index("ix_outbox_event_partner_id", "partner_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    """Canonical JSON of the event's data."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When delivery gave up (``EXCHANGE_WEBHOOK_MAX_ATTEMPTS``); the partner may replay it."""


outbox_t = cast(Table, OutboxEvent.__table__)


async def enqueue_event(
    session: AsyncSession,
    partner_id: uuid.UUID,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> uuid.UUID:
    """Queue an event for a partner's webhook, in the caller's transaction; returns its id."""
    (event_id,) = await enqueue_events(session, event_type, [(partner_id, payload)], now=now)
    return event_id


async def enqueue_events(
    session: AsyncSession,
    event_type: str,
    events: Sequence[tuple[uuid.UUID, Mapping[str, Any]]],
    *,
    now: dt.datetime | None = None,
) -> list[uuid.UUID]:
    """Queue many events of one type, ``(partner id, payload)`` each, in one statement;
    returns their ids."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    if not events:
        return []
    now = now or utcnow()
    ids = [uuid7() for _ in events]
    await insert_columns(
        session,
        outbox_t,
        {
            "id": ids,
            "partner_id": [partner_id for partner_id, _ in events],
            "payload": [canonical_json(dict(payload)).decode() for _, payload in events],
        },
        {"event_type": event_type, "created_at": now, "attempts": 0, "next_attempt_at": now},
    )
    return ids
