"""Login throttling: after too many failed logins a user name, or a client address, is locked
out for a while, whatever it tries (the right password included).

Failures are counted per subject (``name:alice``, ``address:203.0.113.7``) in a window of
``EXCHANGE_CONSOLE_LOCKOUT_MINUTES`` from the first; at ``EXCHANGE_CONSOLE_MAX_FAILURES`` the
subject is locked for that long. The counts live in the database, so a lockout holds on every
replica, and they are bumped by one upsert each, so concurrent failures all count."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import UTCDateTime
from exchange.console.models import LoginThrottle
from exchange.dialect import for_dialect

throttle_t = cast(Table, LoginThrottle.__table__)


def subjects(name: str, address: str) -> tuple[str, str]:
    """What a login attempt is counted against: its user name and its client address."""
    return f"name:{name[:150]}", f"address:{address}"


async def locked_until(
    session: AsyncSession, keys: tuple[str, ...], now: dt.datetime
) -> dt.datetime | None:
    """When the latest lockout of any of ``keys`` ends, if one is still running."""
    until = await session.scalar(
        select(LoginThrottle.locked_until)
        .where(LoginThrottle.subject.in_(keys), LoginThrottle.locked_until > now)
        .order_by(LoginThrottle.locked_until.desc())
        .limit(1)
    )
    return until


async def record_failure(
    session: AsyncSession,
    keys: tuple[str, ...],
    now: dt.datetime,
    *,
    max_failures: int,
    lockout: dt.timedelta,
) -> bool:
    """Count a failed login against each subject; whether one of them is now locked out."""
    insert: Any = for_dialect(session, postgresql=postgresql.insert, sqlite=sqlite.insert)
    window_over = throttle_t.c.window_started_at <= literal(now - lockout, UTCDateTime())
    failures = case((window_over, 1), else_=throttle_t.c.failures + 1)
    locked = False
    for key in keys:
        statement = insert(throttle_t).values(
            subject=key, failures=1, window_started_at=now, locked_until=None
        )
        statement = statement.on_conflict_do_update(
            index_elements=[throttle_t.c.subject],
            set_={
                "failures": failures,
                "window_started_at": case(
                    (window_over, literal(now, UTCDateTime())),
                    else_=throttle_t.c.window_started_at,
                ),
            },
        ).returning(throttle_t.c.failures)
        count = (await session.execute(statement)).scalar_one()
        if count >= max_failures:
            locked = True
            await session.execute(
                throttle_t.update()
                .where(throttle_t.c.subject == key)
                .values(failures=0, window_started_at=now, locked_until=now + lockout)
            )
    return locked


async def clear(session: AsyncSession, key: str) -> None:
    """Forget a subject's failures (a user name after its successful login)."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.subject == key))
