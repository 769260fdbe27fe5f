"""Settlement takes ranges of each account's chain, and postings name their counterparty.

A batch used to write one ``settlement_entry`` row per money posting it took, and to pair the
day's legs by sorting them by transaction: for a day of 10 million postings, 33 of its 44
seconds went into writing those rows. Now:

* ``posting.counterparty_account_id``: the account each posting pairs with, chosen by the engine
  and covered by the posting's hash (encoding version 2), so that who owes whom is one
  aggregate over the day's postings. Postings written before this revision keep ``NULL`` and
  their version 1 hash; settlement pairs those by transaction, as before.
* ``settlement_range`` replaces ``settlement_cursor``: per batch and money account, the range of
  sequence numbers it took, chained by its constraints so that no posting is in two batches and
  none is skipped. The cursors become ranges (an account's first range starts at ``NULL``);
  ``settlement_entry`` stays, unwritten, as the record of the batches made before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each account's cursors, in batch order, keeping a batch only where the cursor moved: that
# batch's range runs from the cursor before it.
_RANGES_FROM_CURSORS = """
    INSERT INTO settlement_range (batch_id, account_id, after_seq, through_seq)
    SELECT batch_id, account_id, NULLIF(before, 0), through_seq
    FROM (
        SELECT batch_id, account_id, through_seq,
               COALESCE(LAG(through_seq) OVER (PARTITION BY account_id ORDER BY batch_id), 0)
                   AS before
        FROM settlement_cursor
    ) AS moves
    WHERE through_seq > before
"""

_CURSORS_FROM_RANGES = """
    INSERT INTO settlement_cursor (batch_id, account_id, through_seq)
    SELECT b.id, r.account_id, max(r.through_seq)
    FROM settlement_batch b JOIN settlement_range r ON r.batch_id <= b.id
    GROUP BY b.id, r.account_id
"""


def _guards(dialect: str, table: str) -> list[str]:
    """The immutability triggers of migration 0004, for one more table."""
    if dialect == "postgresql":
        return [
            f"""
            CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION settlement_refuse_change()
            """,
            f"""
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION settlement_refuse_change()
            """,
        ]
    return [
        f"""
        CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'settlement rows are immutable'); END
        """
        for op in ("update", "delete")
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # A nullable column without a default, added in place: no row is rewritten, and on SQLite
    # the table is not rebuilt (a rebuild would drop its guard triggers).
    op.add_column("posting", sa.Column("counterparty_account_id", sa.BigInteger(), nullable=True))
    if dialect == "postgresql":
        # Settlement sums the day per (account, counterparty): a few thousand groups, where the
        # planner, multiplying the two columns' distinct counts, would expect one per posting
        # and not split the sum between parallel workers.
        op.execute(
            "CREATE STATISTICS posting_pairs (ndistinct)"
            " ON account_id, counterparty_account_id FROM posting"
        )
    op.create_table(
        "settlement_range",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("after_seq", sa.BigInteger(), nullable=True),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "after_seq IS NULL OR after_seq >= 1", name=op.f("ck_settlement_range_after_seq")
        ),
        sa.CheckConstraint(
            "through_seq > COALESCE(after_seq, 0)", name=op.f("ck_settlement_range_forward")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_range_batch_id_settlement_batch"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "account_id", name=op.f("pk_settlement_range")),
        sa.UniqueConstraint(
            "account_id", "through_seq", name=op.f("uq_settlement_range_account_id_through_seq")
        ),
        sa.UniqueConstraint(
            "account_id", "after_seq", name=op.f("uq_settlement_range_account_id_after_seq")
        ),
        sa.ForeignKeyConstraint(
            ["account_id", "after_seq"],
            ["settlement_range.account_id", "settlement_range.through_seq"],
            name="fk_settlement_range_after_seq_settlement_range",
        ),
    )
    op.create_index(
        "uq_settlement_range_first",
        "settlement_range",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("after_seq IS NULL"),
        sqlite_where=sa.text("after_seq IS NULL"),
    )
    # In batch order, so that each range's foreign key finds the one before it.
    op.execute(_RANGES_FROM_CURSORS + " ORDER BY batch_id")
    op.drop_table("settlement_cursor")  # with its triggers
    for statement in _guards(dialect, "settlement_range"):
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    written = bind.scalar(
        sa.text("SELECT count(*) FROM posting WHERE counterparty_account_id IS NOT NULL")
    )
    if written:
        # Revision 0006's verify knows only the version 1 hash: it would call every one of
        # these postings tampered with.
        raise RuntimeError(
            f"{written} postings carry a counterparty (hash version 2), which revision 0006"
            " cannot verify; a ledger written by this version cannot go back"
        )
    op.create_table(
        "settlement_cursor",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("through_seq >= 0", name=op.f("ck_settlement_cursor_through_seq")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_cursor_batch_id_settlement_batch"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "account_id", name=op.f("pk_settlement_cursor")),
    )
    op.execute(_CURSORS_FROM_RANGES)
    for statement in _guards(bind.dialect.name, "settlement_cursor"):
        op.execute(statement)
    op.drop_index("uq_settlement_range_first", table_name="settlement_range")
    op.drop_table("settlement_range")
    if bind.dialect.name == "sqlite":
        op.execute("ALTER TABLE posting DROP COLUMN counterparty_account_id")
    else:
        op.execute("DROP STATISTICS posting_pairs")
        op.drop_column("posting", "counterparty_account_id")
