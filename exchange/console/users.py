"""Console users: made and disabled from the CLI, checked at login.

A password is stored as its Argon2id hash (``argon2-cffi``'s defaults, RFC 9106's second
recommended profile); the TOTP secret (RFC 6238, 30-second steps, 6 digits, as every
authenticator app reads an ``otpauth://`` URI) as AES-GCM ciphertext under the master key with
the user's id as associated data, as partners' HMAC secrets are. A code is accepted in the step
it belongs to or the one either side (clocks drift), and once only: the step of the last code
accepted is kept, and a code of that step or an earlier one is refused."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.console.models import ROLES, ConsoleUser
from exchange.errors import InvalidInput
from partners.service import decrypt_secret, encrypt_secret

ISSUER = "Coalition exchange console"
MIN_PASSWORD_LENGTH = 12
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("a password nobody has; verified so an unknown name costs the same")


@dataclass(frozen=True)
class NewUser:
    """A user just made: the TOTP secret and its URI, shown this once."""

    id: uuid.UUID
    name: str
    role: str
    totp_secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class UserInfo:
    id: uuid.UUID
    name: str
    role: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None


def _associated(user_id: uuid.UUID) -> str:
    return f"console-user:{user_id}"


async def create_user(
    session: AsyncSession, *, name: str, role: str, password: str, master_key: bytes
) -> NewUser:
    """A console user with a password and a new TOTP secret. Names are lower case, unique."""
    if not _NAME.match(name):
        raise InvalidInput("a user name is 2-64 of a-z, 0-9, '.', '_' and '-', starting a-z")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if await session.scalar(select(ConsoleUser.id).where(ConsoleUser.name == name)):
        raise InvalidInput(f"a console user named {name!r} exists already", name=name)
    user_id = uuid7()
    secret = pyotp.random_base32()
    nonce, ciphertext = encrypt_secret(master_key, _associated(user_id), secret.encode())
    session.add(
        ConsoleUser(
            id=user_id,
            name=name,
            role=role,
            password_hash=_HASHER.hash(password),
            totp_nonce=nonce,
            totp_ciphertext=ciphertext,
            created_at=utcnow(),
        )
    )
    await session.flush()
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)
    return NewUser(user_id, name, role, secret, uri)


async def disable_user(session: AsyncSession, name: str) -> UserInfo:
    """Disable a user: every session of theirs ends at its next request, and no login passes."""
    row = await session.scalar(select(ConsoleUser).where(ConsoleUser.name == name))
    if row is None:
        raise InvalidInput(f"no console user named {name!r}", name=name)
    if row.disabled_at is None:
        row.disabled_at = utcnow()
        await session.flush()
    return _info(row)


async def list_users(session: AsyncSession) -> list[UserInfo]:
    rows = await session.scalars(select(ConsoleUser).order_by(ConsoleUser.name))
    return [_info(row) for row in rows]


def _info(row: ConsoleUser) -> UserInfo:
    return UserInfo(row.id, row.name, row.role, row.created_at, row.disabled_at)


async def check_credentials(
    session: AsyncSession,
    *,
    name: str,
    password: str,
    code: str,
    master_key: bytes,
    now: dt.datetime | None = None,
) -> UserInfo | None:
    """The user, if the name, password and TOTP code are all right and the user is enabled;
    else ``None``, whichever was wrong. An unknown name costs an Argon2 verification too."""
    row = await session.scalar(select(ConsoleUser).where(ConsoleUser.name == name))
    if not _password_ok(row.password_hash if row else _DUMMY_HASH, password) or row is None:
        return None
    if row.disabled_at is not None:
        return None
    secret = decrypt_secret(
        master_key, _associated(row.id), row.totp_nonce, row.totp_ciphertext
    ).decode()
    step = _accepted_step(secret, code.strip(), now or utcnow())
    if step is None or (row.last_totp_step is not None and step <= row.last_totp_step):
        return None
    spent = await session.execute(
        update(ConsoleUser)
        .where(
            ConsoleUser.id == row.id,
            (ConsoleUser.last_totp_step.is_(None)) | (ConsoleUser.last_totp_step < step),
        )
        .values(last_totp_step=step)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return None  # the same code, spent by a concurrent login
    return _info(row)


def _password_ok(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _accepted_step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The time step whose code ``code`` is: this one or one either side, else ``None``."""
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            return candidate
    return None
