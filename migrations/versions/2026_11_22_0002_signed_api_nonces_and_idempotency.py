"""The signed API: replay nonces and idempotency records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 15:33:28.157798
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "signature_nonce",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce", name=op.f("pk_signature_nonce")),
    )
    with op.batch_alter_table("signature_nonce", schema=None) as batch_op:
        batch_op.create_index("ix_signature_nonce_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=False),
        sa.Column("response_content_type", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_idempotency_record_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("partner_id", "key", name=op.f("pk_idempotency_record")),
    )
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_record_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_record_expires_at")

    op.drop_table("idempotency_record")
    with op.batch_alter_table("signature_nonce", schema=None) as batch_op:
        batch_op.drop_index("ix_signature_nonce_expires_at")

    op.drop_table("signature_nonce")
