"""Earn rules and purchases: the ``earn`` transaction kind, brands' earn rule versions, purchases
with their lines, returns with theirs.

Every new row is written once: triggers refuse UPDATE and DELETE of them on both databases, as
for rate versions (a new rule version supersedes; a return adds rows).

The kind CHECK of ``ledger_transaction`` gains ``earn``. On PostgreSQL the constraint is dropped
and added again. SQLite cannot alter a CHECK, and rebuilding ``ledger_transaction`` would drop
its triggers and break the foreign keys that name it; a constraint that only accepts more than
before changes nothing stored, which is the case SQLite documents ``PRAGMA writable_schema`` for
(https://www.sqlite.org/lang_altertable.html#otheralter): the table's SQL is edited in the
schema, and the schema version bumped so every connection reads it again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS_BEFORE = (
    "'issue', 'redeem', 'transfer', 'convert', 'donate', 'hold', 'capture', 'void', 'reverse',"
    " 'settle'"
)
_KINDS_AFTER = _KINDS_BEFORE + ", 'earn'"
_TABLES = (
    "earn_rule_version", "purchase", "purchase_line", "purchase_return", "purchase_return_line",
)  # fmt: skip


def _kinds(old: str, new: str) -> None:
    """The kind CHECK of ``ledger_transaction`` from ``old`` kinds to ``new`` ones."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE ledger_transaction DROP CONSTRAINT ck_ledger_transaction_kind")
        op.execute(
            "ALTER TABLE ledger_transaction ADD CONSTRAINT ck_ledger_transaction_kind"
            f" CHECK (kind IN ({new}))"
        )
        return
    bind = op.get_bind()
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    changed = bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?)"
        " WHERE type = 'table' AND name = 'ledger_transaction' AND instr(sql, ?) > 0",
        (f"kind IN ({old}))", f"kind IN ({new}))", f"kind IN ({old}))"),
    ).rowcount
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    if changed != 1:
        raise RuntimeError("ledger_transaction's kind CHECK is not the one this migration knows")


def _tables() -> None:
    op.create_table(
        "earn_rule_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_earn_rule_version_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earn_rule_version")),
        sa.UniqueConstraint(
            "partner_id", "effective_at", name=op.f("uq_earn_rule_version_partner_id_effective_at")
        ),
    )
    op.create_table(
        "purchase",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("member_ref", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rule_version_id", sa.Uuid(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_purchase_points")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_purchase_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["rule_version_id"],
            ["earn_rule_version.id"],
            name=op.f("fk_purchase_rule_version_id_earn_rule_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase")),
        sa.UniqueConstraint("partner_id", "order_id", name=op.f("uq_purchase_partner_id_order_id")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_purchase_transaction_id")),
    )
    op.create_table(
        "purchase_line",
        sa.Column("purchase_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.SmallInteger(), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("product_type", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("product_type_bps", sa.Integer(), nullable=False),
        sa.Column("category_bps", sa.Integer(), nullable=False),
        sa.Column("promotion_bps", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_purchase_line_quantity")),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_purchase_line_amount_minor")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_purchase_line_points")),
        sa.ForeignKeyConstraint(
            ["purchase_id"], ["purchase.id"], name=op.f("fk_purchase_line_purchase_id_purchase")
        ),
        sa.PrimaryKeyConstraint("purchase_id", "line", name=op.f("pk_purchase_line")),
    )
    op.create_table(
        "purchase_return",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("purchase_id", sa.Uuid(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_purchase_return_points")),
        sa.ForeignKeyConstraint(
            ["purchase_id"], ["purchase.id"], name=op.f("fk_purchase_return_purchase_id_purchase")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_purchase_return_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_return")),
    )
    op.create_index("ix_purchase_return_purchase_id", "purchase_return", ["purchase_id"])
    op.create_table(
        "purchase_return_line",
        sa.Column("return_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.SmallInteger(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_purchase_return_line_quantity")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_purchase_return_line_points")),
        sa.ForeignKeyConstraint(
            ["return_id"],
            ["purchase_return.id"],
            name=op.f("fk_purchase_return_line_return_id_purchase_return"),
        ),
        sa.PrimaryKeyConstraint("return_id", "line", name=op.f("pk_purchase_return_line")),
    )


def _guards() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _TABLES:
        if postgres:
            # The baseline's function; it raises whatever the table.
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()"
            )
            continue
        for action in ("update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"
            )


def upgrade() -> None:
    _kinds(_KINDS_BEFORE, _KINDS_AFTER)
    _tables()
    _guards()


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
    _kinds(_KINDS_AFTER, _KINDS_BEFORE)
