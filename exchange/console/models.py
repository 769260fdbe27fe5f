"""The console's tables: its users, their sessions, login throttles, the audit log and the
background jobs (``verify``) it starts.

Nothing here holds a secret in the clear: a password is an Argon2 hash, a TOTP secret is AES-GCM
ciphertext under the master key (the user id as associated data), a session token is kept as
its SHA-256 only."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, BigIntPK, UTCDateTime, utcnow, uuid7

ROLES = ("viewer", "operator")


class ConsoleUser(Base):
    __tablename__ = "console_user"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator')", name="role"),
        Index("uq_console_user_name", "name", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    totp_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger)
    """The time step of the last code accepted: a code is good once."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    __tablename__ = "console_session"
    __table_args__ = (
        Index("uq_console_session_token_hash", "token_hash", unique=True),
        Index("ix_console_session_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("console_user.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed logins of one subject (``name:alice`` or ``address:203.0.113.7``) in the current
    window, and until when it is locked out. In the database, so it holds across replicas."""

    __tablename__ = "console_login_throttle"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int]
    window_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    __tablename__ = "console_audit"
    __table_args__ = (Index("ix_console_audit_at", "at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    client_address: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)
    """JSON: what the action was given and what came of it."""


class ConsoleJob(Base):
    """A background job started from the console (``verify``), with its progress."""

    __tablename__ = "console_job"
    __table_args__ = (
        CheckConstraint("state IN ('running', 'ok', 'failed')", name="state"),
        Index("ix_console_job_kind_started_at", "kind", "started_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    kind: Mapped[str] = mapped_column(String(32))
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int]
    steps: Mapped[int]
    message: Mapped[str] = mapped_column(String(500))
    result: Mapped[str | None] = mapped_column(Text)
    """JSON report once finished."""
