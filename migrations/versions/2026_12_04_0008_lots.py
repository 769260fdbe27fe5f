"""Lots and expiry: brands' expiry policies (effective-dated, immutable), the lots of member
accounts and what each debit took from which lot, the ``expire`` transaction kind and the
``breakage`` account kind (one per brand, on its points ledger, opened with the brand).

SQLite cannot alter a CHECK constraint; widening one that existing rows satisfy is the case
SQLite documents as safe to make by rewriting the table's schema text (``PRAGMA
writable_schema``, then a new ``schema_version``), which keeps the tables, and so their
triggers and the foreign keys that point at them, as they are."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_TRANSACTION_KINDS = (
    "'issue', 'redeem', 'transfer', 'convert', 'donate', 'hold', 'capture', 'void', 'reverse',"
    " 'settle', 'earn'"
)
_NEW_TRANSACTION_KINDS = _OLD_TRANSACTION_KINDS + ", 'expire'"
_OLD_ACCOUNT_KINDS = "'member', 'issuance', 'settlement'"
_NEW_ACCOUNT_KINDS = _OLD_ACCOUNT_KINDS + ", 'breakage'"

_GUARDS_POSTGRES = [
    """
    CREATE TRIGGER expiry_policy_immutable BEFORE UPDATE OR DELETE ON expiry_policy
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER lot_consumption_immutable BEFORE UPDATE OR DELETE ON lot_consumption
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER lot_no_delete BEFORE DELETE ON lot
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in ("expiry_policy", "lot", "lot_consumption")
    ),
]

_GUARDS_SQLITE = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
        """
        for table in ("expiry_policy", "lot_consumption")
        for action in ("update", "delete")
    ),
    """
    CREATE TRIGGER lot_no_delete BEFORE DELETE ON lot
    BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
    """,
]


def _widen_sqlite_check(table: str, old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    if old not in sql:
        raise RuntimeError(f"the CHECK of {table} is not the one this migration widens")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
        (sql.replace(old, new), table),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def _change_checks(postgres: bool, old_kinds: tuple[str, str], new_kinds: tuple[str, str]) -> None:
    """The kinds of transactions and of accounts, from ``old_kinds`` to ``new_kinds``."""
    checks = (
        ("ledger_transaction", "ck_ledger_transaction_kind", old_kinds[0], new_kinds[0]),
        ("account", "ck_account_kind", old_kinds[1], new_kinds[1]),
    )
    for table, constraint, old, new in checks:
        if postgres:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK (kind IN ({new}))")
        else:
            _widen_sqlite_check(table, f"kind IN ({old})", f"kind IN ({new})")


def _tables() -> None:
    op.create_table(
        "expiry_policy",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period", sa.Integer(), nullable=True),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('never', 'months', 'quarters', 'activity')",
            name=op.f("ck_expiry_policy_kind"),
        ),
        sa.CheckConstraint(
            "(kind = 'never' AND period IS NULL)"
            " OR (kind <> 'never' AND period BETWEEN 1 AND 1200)",
            name=op.f("ck_expiry_policy_period"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_expiry_policy_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expiry_policy")),
        sa.UniqueConstraint(
            "partner_id", "effective_at", name=op.f("uq_expiry_policy_partner_id_effective_at")
        ),
    )
    op.create_table(
        "lot",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("noticed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_lot_points")),
        sa.CheckConstraint("remaining >= 0 AND remaining <= points", name=op.f("ck_lot_remaining")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot")),
    )
    op.create_index(
        "ix_lot_open",
        "lot",
        ["account_id", "expires_at", "id"],
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_lot_due",
        "lot",
        ["expires_at"],
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "lot_consumption",
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_lot_consumption_points")),
        sa.PrimaryKeyConstraint("transaction_id", "lot_id", name=op.f("pk_lot_consumption")),
    )
    op.create_index("ix_lot_consumption_lot_id", "lot_consumption", ["lot_id"])


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _change_checks(
        postgres,
        (_OLD_TRANSACTION_KINDS, _OLD_ACCOUNT_KINDS),
        (_NEW_TRANSACTION_KINDS, _NEW_ACCOUNT_KINDS),
    )
    _tables()
    for statement in _GUARDS_POSTGRES if postgres else _GUARDS_SQLITE:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("lot_consumption")
    op.drop_table("lot")
    op.drop_table("expiry_policy")
    _change_checks(
        postgres,
        (_NEW_TRANSACTION_KINDS, _NEW_ACCOUNT_KINDS),
        (_OLD_TRANSACTION_KINDS, _OLD_ACCOUNT_KINDS),
    )
