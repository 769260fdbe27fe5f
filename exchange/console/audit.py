"""The console's audit log: who did what, when, from where, with what outcome, and the details
(what the action was given and what came of it). Written in the transaction of the action it
records, so an action is never done without its entry, nor recorded without being done; a
refusal (wrong role, failed or locked-out login) is recorded as such."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import json_default, utcnow
from exchange.console.models import AuditEntry


@dataclass(frozen=True)
class AuditView:
    id: int
    at: dt.datetime
    user_name: str
    action: str
    outcome: str
    client_address: str
    details: dict[str, Any]


async def record(
    session: AsyncSession,
    *,
    user_name: str,
    action: str,
    outcome: str = "ok",
    address: str,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=utcnow(),
            user_name=user_name[:64],
            action=action,
            outcome=outcome,
            client_address=address[:64],
            details=json.dumps(details or {}, sort_keys=True, default=json_default),
        )
    )
    await session.flush()


async def recent(session: AsyncSession, *, limit: int = 200) -> list[AuditView]:
    """The newest entries first."""
    rows = await session.scalars(
        select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    )
    return [
        AuditView(
            row.id,
            row.at,
            row.user_name,
            row.action,
            row.outcome,
            row.client_address,
            json.loads(row.details),
        )
        for row in rows
    ]
