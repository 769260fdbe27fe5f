"""Holds that run out: released under the engine's locks as it posts, swept by a periodic job,
and left out of what a member has available.

Beside ``exchange.ledger.holds`` rather than in it: the engine releases expired holds of the
accounts it locks, and the hold operations post through the engine."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.dialect import one_of
from exchange.ledger.models import Account, Hold

account_t = cast(Table, Account.__table__)
hold_t = cast(Table, Hold.__table__)


async def expire_holds(
    session: AsyncSession,
    account_ids: Sequence[int],
    now: dt.datetime,
    keep: Collection[uuid.UUID] = (),
) -> dict[int, int]:
    """Mark expired active holds of these (locked) accounts, except those in ``keep``; return
    the points each frees."""
    if not account_ids:
        return {}
    conditions = [
        one_of(session, hold_t.c.account_id, account_ids),
        hold_t.c.status == "active",
        hold_t.c.expires_at <= now,
    ]
    if keep:
        conditions.append(hold_t.c.id.not_in(sorted(keep)))
    rows = await session.execute(
        update(hold_t)
        .where(*conditions)
        .values(status="expired", closed_at=now)
        .returning(hold_t.c.account_id, hold_t.c.points)
    )
    freed: dict[int, int] = defaultdict(int)
    for account_id, points in rows:
        freed[account_id] += points
    return freed


async def release_expired_holds(session: AsyncSession, now: dt.datetime | None = None) -> int:
    """Sweep every account with expired holds (a periodic job); returns how many were released."""
    now = now or utcnow()
    candidates = (
        (
            await session.execute(
                select(hold_t.c.account_id)
                .where(hold_t.c.status == "active", hold_t.c.expires_at <= now)
                .distinct()
            )
        )
        .scalars()
        .all()
    )
    if not candidates:
        return 0
    locked = (
        await session.execute(
            select(account_t.c.id, account_t.c.held)
            .where(account_t.c.id.in_(sorted(candidates)))
            .order_by(account_t.c.id)
            .with_for_update()
        )
    ).all()
    freed = await expire_holds(session, [row.id for row in locked], now)
    if freed:
        await session.execute(
            update(account_t)
            .where(account_t.c.id == bindparam("b_id"))
            .values(held=account_t.c.held - bindparam("b_freed")),
            [{"b_id": account_id, "b_freed": points} for account_id, points in freed.items()],
        )
    return len(freed)


async def active_held(
    session: AsyncSession, account_id: int, now: dt.datetime | None = None
) -> int:
    """Points held on an account by holds that are active and not yet expired."""
    now = now or utcnow()
    total = await session.scalar(
        select(func.coalesce(func.sum(hold_t.c.points), 0)).where(
            hold_t.c.account_id == account_id,
            hold_t.c.status == "active",
            hold_t.c.expires_at > now,
        )
    )
    return int(total or 0)


_HELD_NOW = (
    select(func.coalesce(func.sum(hold_t.c.points), 0))
    .where(
        hold_t.c.account_id == account_t.c.id,
        hold_t.c.status == "active",
        hold_t.c.expires_at > bindparam("now"),
    )
    .correlate(account_t)
    .scalar_subquery()
)
_AVAILABLE = select(account_t.c.id, account_t.c.balance - _HELD_NOW).where(
    account_t.c.id.in_(bindparam("account_ids", expanding=True))
)


async def available_points(
    session: AsyncSession, account_ids: Collection[int], now: dt.datetime | None = None
) -> dict[int, int]:
    """Each account's balance less the points its active, unexpired holds keep (what
    :func:`active_held` leaves available), in one statement for all of them."""
    if not account_ids:
        return {}
    rows = await session.execute(
        _AVAILABLE, {"account_ids": sorted(set(account_ids)), "now": now or utcnow()}
    )
    return {account_id: int(available) for account_id, available in rows}
