"""Batches: a transaction remembers the batch it was an item of, and a batch item's idempotency
key names one transaction of its partner, for good (a unique index, not a hope).

Single POSTs keep their Idempotency-Key on the transaction as well, but outside the index: theirs
is the request's key, which the partner may use again once the request's 24 h record has lapsed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 16:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default, added in place: no row is rewritten, and on SQLite
    # the table is not rebuilt (a rebuild would drop its guard triggers).
    op.add_column("ledger_transaction", sa.Column("batch_id", sa.Uuid(), nullable=True))
    op.create_index(
        "uq_ledger_transaction_batch_item_key",
        "ledger_transaction",
        ["partner_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_transaction_batch_item_key", table_name="ledger_transaction")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+), for the same reason: Alembic's batch mode would rebuild it.
        op.execute("ALTER TABLE ledger_transaction DROP COLUMN batch_id")
    else:
        op.drop_column("ledger_transaction", "batch_id")
