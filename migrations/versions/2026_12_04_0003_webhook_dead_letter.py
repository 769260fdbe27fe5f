"""Webhook deliveries give up: an event tried ``EXCHANGE_WEBHOOK_MAX_ATTEMPTS`` times is
dead-lettered (``dead_at``), shown to its partner with its last error, and replayed on request.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_event") as table:
        table.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_event") as table:
        table.drop_column("dead_at")
