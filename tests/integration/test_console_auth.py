"""The console's sign-in parts on a real database: users (Argon2 and a TOTP secret under the
master key), codes good once, disabled users, the login throttle, and the exact number
formats the pages use."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.console import formats, throttle
from exchange.console.models import ConsoleUser
from exchange.console.sessions import end_session, open_session, signed_in
from exchange.console.users import check_credentials, create_user, disable_user
from exchange.errors import InvalidInput
from exchange.settings import Settings
from exchange.signing import load_master_key

PASSWORD = "a long console password"


async def test_a_user_signs_in_with_password_and_a_code_good_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    key = load_master_key(settings)
    async with sessions() as session, session.begin():
        made = await create_user(
            session, name="olivia", role="operator", password=PASSWORD, master_key=key
        )
        row = await session.scalar(select(ConsoleUser).where(ConsoleUser.name == "olivia"))
        assert row is not None and made.totp_secret.encode() not in row.totp_ciphertext
        assert row.password_hash.startswith("$argon2id$")
    now = utcnow()
    code = pyotp.TOTP(made.totp_secret).at(now)
    async with sessions() as session, session.begin():
        wrong = await check_credentials(
            session, name="olivia", password="not it at all", code=code, master_key=key, now=now
        )
        assert wrong is None
        user = await check_credentials(
            session, name="olivia", password=PASSWORD, code=code, master_key=key, now=now
        )
        assert user is not None and user.role == "operator"
    async with sessions() as session, session.begin():
        again = await check_credentials(
            session, name="olivia", password=PASSWORD, code=code, master_key=key, now=now
        )
        assert again is None  # the same code a second time
        token = await open_session(session, user, address="127.0.0.1", lifetime=dt.timedelta(1))
    async with sessions() as session, session.begin():
        assert (await signed_in(session, token)) is not None
        assert (await signed_in(session, token + "x")) is None
        await disable_user(session, "olivia")
        assert (await signed_in(session, token)) is None  # disabled: the session is dead
        await end_session(session, token)


async def test_names_and_passwords_are_checked(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    key = load_master_key(settings)
    async with sessions() as session, session.begin():
        with pytest.raises(InvalidInput):
            await create_user(session, name="v", role="viewer", password=PASSWORD, master_key=key)
        with pytest.raises(InvalidInput):
            await create_user(session, name="vic", role="admin", password=PASSWORD, master_key=key)
        with pytest.raises(InvalidInput):
            await create_user(session, name="vic", role="viewer", password="short", master_key=key)


async def test_failures_lock_a_subject_out_then_the_lock_ends(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    lockout = dt.timedelta(minutes=15)
    keys = throttle.subjects("olivia", "203.0.113.7")
    async with sessions() as session, session.begin():
        for attempt in range(1, 4):
            locked = await throttle.record_failure(
                session, keys, now, max_failures=3, lockout=lockout
            )
            assert locked == (attempt == 3)
        assert await throttle.locked_until(session, keys, now) == now + lockout
        assert await throttle.locked_until(session, keys, now + lockout) is None
        other = throttle.subjects("victor", "198.51.100.1")
        assert await throttle.locked_until(session, other, now) is None


def test_money_is_written_exactly() -> None:
    assert formats.money(12_000_000) == "12.00"
    assert formats.money(29_696_000) == "29.696"
    assert formats.money(-42_296_001) == "-42.296001"
    assert formats.money(1_234_567_890_000) == "1,234,567.89"
    assert formats.money(5, 0) == "0.000005"
    assert formats.minor(-4230) == "-42.30"
    assert formats.minor(7, 0) == "7"
    assert formats.percent(1234) == "12.34 %"
