"""Charities get a stable code (``partner.code``, unique, as a brand's currency is), partner
names are unique per kind, and each settlement batch records the calendar it was cut with (``settlement_batch.calendar``:
``"<zone> <HH:MM:SS>"``, with `` early`` when an operator cut a test day at the moment of the
run), so that a run with another cutoff or zone is refused instead of cutting a day in the
wrong place. Batches from before have none, and constrain nothing."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases (no batch copy on SQLite, which would drop triggers).
    op.add_column("settlement_batch", sa.Column("calendar", sa.String(80), nullable=True))
    op.add_column("partner", sa.Column("code", sa.String(16), nullable=True))
    op.create_index("uq_partner_code", "partner", ["code"], unique=True)
    op.create_index("uq_partner_kind_name", "partner", ["kind", "name"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_partner_kind_name", "partner")
    op.drop_index("uq_partner_code", "partner")
    op.drop_column("partner", "code")
    op.drop_column("settlement_batch", "calendar")
