"""The zero-sum guard keeps to index probes; reversals are indexed only where there is one.

The statement-level guard (migration 0006) found the transactions it checks with an anti-join
that the planner, expecting a couple of hundred rows from the transition table, made a merge
join over the whole ``ledger_transaction`` primary key: a scan that grows with the ledger, on
every INSERT of postings. Its function now runs with hash and merge joins off, so that each
transaction of the statement is one probe of an index, whatever the tables' sizes.

``ix_ledger_transaction_reverses_id`` indexed every transaction, almost all with no reversal
(``NULL``); it now holds only reversals, which is all that looks it up.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_ledger_transaction_reverses_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER FUNCTION ledger_check_zero_sum_statement()"
            " SET enable_mergejoin = off SET enable_hashjoin = off"
        )
    op.drop_index(_INDEX, table_name="ledger_transaction")
    op.create_index(
        _INDEX,
        "ledger_transaction",
        ["reverses_id"],
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="ledger_transaction")
    op.create_index(_INDEX, "ledger_transaction", ["reverses_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER FUNCTION ledger_check_zero_sum_statement() RESET enable_mergejoin")
        op.execute("ALTER FUNCTION ledger_check_zero_sum_statement() RESET enable_hashjoin")
