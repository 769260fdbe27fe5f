"""Console sessions, kept in the database: a random token in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` unless ``EXCHANGE_CONSOLE_SECURE_COOKIES=0``), of which only the SHA-256 is
stored; an absolute expiry; logout ends the row. Each session carries its own CSRF token, which
every form of the session sends back (a synchroniser token: a POST without it changes nothing)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.console.models import ConsoleSession, ConsoleUser
from exchange.console.users import UserInfo

COOKIE = "exchange_console"
LOGIN_COOKIE = "exchange_console_login"
"""The login form's own CSRF cookie (double submit: the form carries the same value), set
before there is a session."""


@dataclass(frozen=True)
class SignedIn:
    """The user of a live session, and the session's CSRF token."""

    user: UserInfo
    csrf_token: str
    expires_at: dt.datetime


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def open_session(
    session: AsyncSession, user: UserInfo, *, address: str, lifetime: dt.timedelta
) -> str:
    """A new session for ``user``; its token, for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        ConsoleSession(
            id=uuid7(),
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            client_address=address[:64],
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    await session.flush()
    return token


async def signed_in(session: AsyncSession, token: str | None) -> SignedIn | None:
    """Who holds the session ``token``, if it is live and its user enabled."""
    if not token or len(token) > 200:
        return None
    now = utcnow()
    row = (
        await session.execute(
            select(ConsoleSession, ConsoleUser)
            .join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
            .where(
                ConsoleSession.token_hash == token_hash(token),
                ConsoleSession.ended_at.is_(None),
                ConsoleSession.expires_at > now,
                ConsoleUser.disabled_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return None
    record, user = row
    return SignedIn(
        UserInfo(user.id, user.name, user.role, user.created_at, user.disabled_at),
        record.csrf_token,
        record.expires_at,
    )


async def end_session(session: AsyncSession, token: str) -> None:
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == token_hash(token), ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )
