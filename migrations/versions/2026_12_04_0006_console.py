"""The operator console: its users, their sessions, login throttles, the audit log and its jobs.

``console_user`` keeps an Argon2 password hash and the TOTP secret as AES-GCM ciphertext under
the master key; ``console_session`` keeps a session token's SHA-256 only; ``console_login_throttle``
counts failed logins per user name and per client address (in the database, so a lockout holds
across replicas); ``console_audit`` records every action; ``console_job`` a background job
started from the console (``verify``) with its progress. ``partner_key.last_used_at`` is when
a key last signed a request, folded in from the replay nonces as they are purged.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MOMENT = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("partner_key", sa.Column("last_used_at", _MOMENT, nullable=True))
    op.create_table(
        "console_user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("totp_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("totp_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("last_totp_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _MOMENT, nullable=False),
        sa.Column("disabled_at", _MOMENT, nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator')", name=op.f("ck_console_user_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_user")),
    )
    op.create_index("uq_console_user_name", "console_user", ["name"], unique=True)
    op.create_table(
        "console_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("created_at", _MOMENT, nullable=False),
        sa.Column("expires_at", _MOMENT, nullable=False),
        sa.Column("ended_at", _MOMENT, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["console_user.id"], name=op.f("fk_console_session_user_id_console_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_session")),
    )
    op.create_index("uq_console_session_token_hash", "console_session", ["token_hash"], unique=True)
    op.create_index("ix_console_session_expires_at", "console_session", ["expires_at"])
    op.create_table(
        "console_login_throttle",
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", _MOMENT, nullable=False),
        sa.Column("locked_until", _MOMENT, nullable=True),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_console_login_throttle")),
    )
    op.create_table(
        "console_audit",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", _MOMENT, nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_audit")),
    )
    op.create_index("ix_console_audit_at", "console_audit", ["at"])
    op.create_table(
        "console_job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=False),
        sa.Column("started_at", _MOMENT, nullable=False),
        sa.Column("updated_at", _MOMENT, nullable=False),
        sa.Column("finished_at", _MOMENT, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'ok', 'failed')", name=op.f("ck_console_job_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_job")),
    )
    op.create_index("ix_console_job_kind_started_at", "console_job", ["kind", "started_at"])


def downgrade() -> None:
    op.drop_table("console_job")
    op.drop_table("console_audit")
    op.drop_table("console_login_throttle")
    op.drop_table("console_session")
    op.drop_table("console_user")
    op.drop_column("partner_key", "last_used_at")
