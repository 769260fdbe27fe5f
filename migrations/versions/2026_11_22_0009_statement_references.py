"""References of postings and transactions are checked once per INSERT statement, and the rows
they refer to cannot be deleted.

A foreign key is checked row by row: for each posting, a query for its account, taking a
``KEY SHARE`` lock on it (which the engine already holds ``FOR UPDATE``); for each transaction,
one for its partner and one for the transaction it reverses. A 1 000-item batch ran 3 000 of
them. On PostgreSQL these checks now run once per statement, as migration 0006 does for the
posting's transaction: the posting guard also finds any account its postings name that does not
exist, and a new statement-level trigger on ``ledger_transaction`` does the same for partners and
reversed transactions, each distinct value one index probe. The foreign keys also kept a
referenced row from being deleted; accounts and partners are now never deleted, on both
databases (triggers), as postings and transactions already were. SQLite keeps its foreign keys.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Hash and merge joins off as migration 0008 set them, so every check is index probes whatever
# the tables' sizes; the search path pinned as migration 0006 explains.
_SETTINGS = """
    SET enable_seqscan = off
    SET enable_mergejoin = off
    SET enable_hashjoin = off
    SET search_path FROM CURRENT
"""

POSTING_GUARD = f"""
    CREATE OR REPLACE FUNCTION ledger_check_zero_sum_statement() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        bad_transaction uuid;
        bad_account bigint;
        bad_ledger text;
    BEGIN
        SELECT touched.transaction_id INTO bad_transaction
        FROM (SELECT DISTINCT transaction_id FROM new_postings) AS touched
        WHERE NOT EXISTS (
            SELECT 1 FROM ledger_transaction t WHERE t.id = touched.transaction_id
        )
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'postings refer to transaction %, which does not exist',
                bad_transaction
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        SELECT touched.account_id INTO bad_account
        FROM (SELECT DISTINCT account_id FROM new_postings) AS touched
        WHERE NOT EXISTS (SELECT 1 FROM account a WHERE a.id = touched.account_id)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'postings refer to account %, which does not exist', bad_account
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        -- Per transaction touched, its postings through the transaction_id index (LATERAL:
        -- the planner knows nothing of the transition table's size and would otherwise
        -- scan the whole posting table for a batch).
        SELECT touched.transaction_id, sums.ledger INTO bad_transaction, bad_ledger
        FROM (SELECT DISTINCT transaction_id FROM new_postings) AS touched
        CROSS JOIN LATERAL (
            SELECT p.ledger, sum(p.amount) AS total
            FROM posting p
            WHERE p.transaction_id = touched.transaction_id
            GROUP BY p.ledger
        ) AS sums
        WHERE sums.total <> 0
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transaction % does not sum to zero on ledger %',
                bad_transaction, bad_ledger
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$
    {_SETTINGS}
"""

TRANSACTION_GUARD = [
    f"""
    CREATE FUNCTION ledger_check_transaction_references() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        bad uuid;
    BEGIN
        SELECT touched.partner_id INTO bad
        FROM (SELECT DISTINCT partner_id FROM new_transactions) AS touched
        WHERE NOT EXISTS (SELECT 1 FROM partner p WHERE p.id = touched.partner_id)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transactions refer to partner %, which does not exist', bad
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        SELECT touched.reverses_id INTO bad
        FROM (
            SELECT DISTINCT reverses_id FROM new_transactions WHERE reverses_id IS NOT NULL
        ) AS touched
        WHERE NOT EXISTS (SELECT 1 FROM ledger_transaction t WHERE t.id = touched.reverses_id)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'a transaction reverses transaction %, which does not exist', bad
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$
    {_SETTINGS}
    """,
    """
    CREATE TRIGGER ledger_transaction_references AFTER INSERT ON ledger_transaction
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_transaction_references()
    """,
]

_FOREIGN_KEYS = [
    ("posting", "fk_posting_account_id_account", ["account_id"], "account"),
    ("ledger_transaction", "fk_ledger_transaction_partner_id_partner", ["partner_id"], "partner"),
    (
        "ledger_transaction",
        "fk_ledger_transaction_reverses_id_ledger_transaction",
        ["reverses_id"],
        "ledger_transaction",
    ),
]


def _no_delete(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"""
            CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
            """,
            f"""
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
            """,
        ]
    return [
        f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable: DELETE on {table} refused'); END
        """
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ("account", "partner"):
        for statement in _no_delete(dialect, table):
            op.execute(statement)
    if dialect != "postgresql":
        return
    op.execute(
        "SELECT set_config('search_path',"
        " quote_ident(current_schema()) || ', pg_catalog, pg_temp', true)"
    )
    op.execute(POSTING_GUARD)
    for statement in TRANSACTION_GUARD:
        op.execute(statement)
    for table, name, _, _ in _FOREIGN_KEYS:
        op.drop_constraint(name, table)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table, name, columns, referred in _FOREIGN_KEYS:
            op.create_foreign_key(name, table, referred, columns, ["id"])
        op.execute("DROP TRIGGER ledger_transaction_references ON ledger_transaction")
        op.execute("DROP FUNCTION ledger_check_transaction_references()")
    for table in ("account", "partner"):
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER {table}_no_delete ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER {table}_no_delete")
    # The posting guard keeps its account check: harmless beside the foreign key.
