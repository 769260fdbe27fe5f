"""The transparency log of transactions: entries, tiles, signed checkpoints, co-signatures.

``log_entry`` gives each committed transaction its one place in the log (the primary key is the
index, a unique constraint keeps a transaction from being logged twice); ``log_tile`` holds the
tree's hashes in C2SP tlog-tiles shape (256 hashes per row, height 8 per level), so a proof at
ten million leaves reads a handful of rows; ``log_checkpoint`` keeps one root per size, for good.

Guards, as for the ledger's rows: entries, checkpoints and co-signatures are never changed or
removed, and a full tile (256 hashes) never changes; only the right edge's partial tiles are
rewritten as they fill (on PostgreSQL through the baseline's ``ledger_refuse_change``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 17:10:00.000000
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
        "log_entry",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_log_entry")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_log_entry_transaction_id")),
        sa.CheckConstraint("idx >= 0", name=op.f("ck_log_entry_idx")),
    )
    op.create_table(
        "log_tile",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_log_tile")),
    )
    op.create_table(
        "log_checkpoint",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_log_checkpoint")),
        sa.CheckConstraint(
            "reason IN ('interval', 'cutoff')", name=op.f("ck_log_checkpoint_reason")
        ),
    )
    op.create_table(
        "log_witness",
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature_line", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_size"],
            ["log_checkpoint.size"],
            name=op.f("fk_log_witness_checkpoint_size_log_checkpoint"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_log_witness_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("checkpoint_size", "partner_id", name=op.f("pk_log_witness")),
    )

    if op.get_bind().dialect.name == "postgresql":
        for statement in LOG_GUARDS_POSTGRES:
            op.execute(statement)
    else:
        for statement in LOG_GUARDS_SQLITE:
            op.execute(statement)


_IMMUTABLE = ("log_entry", "log_checkpoint", "log_witness")
_FULL_TILE = 256 * 32

LOG_GUARDS_POSTGRES = [
    *(
        f"""
        CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in _IMMUTABLE
    ),
    f"""
    CREATE TRIGGER log_tile_full_immutable BEFORE UPDATE OR DELETE ON log_tile
    FOR EACH ROW WHEN (length(OLD.hashes) = {_FULL_TILE}) EXECUTE FUNCTION ledger_refuse_change()
    """,
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in (*_IMMUTABLE, "log_tile")
    ),
]

LOG_GUARDS_SQLITE = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'log rows are immutable'); END
        """
        for table in _IMMUTABLE
        for action in ("update", "delete")
    ),
    *(
        f"""
        CREATE TRIGGER log_tile_full_no_{action} BEFORE {action.upper()} ON log_tile
        WHEN length(OLD.hashes) = {_FULL_TILE}
        BEGIN SELECT RAISE(ABORT, 'full tiles are immutable'); END
        """
        for action in ("update", "delete")
    ),
]


def downgrade() -> None:
    op.drop_table("log_witness")
    op.drop_table("log_checkpoint")
    op.drop_table("log_tile")
    op.drop_table("log_entry")
