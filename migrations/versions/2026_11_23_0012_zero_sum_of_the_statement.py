"""The zero-sum guard sums the postings of the statement alone, not every posting of the
transactions it touches.

The guard (migrations 0006 and 0009) read back, for every transaction an INSERT touched, all its
postings through the ``transaction_id`` index and summed them per ledger: for a batch, a thousand
probes and a thousand small aggregates, about a sixth of PostgreSQL's time for the batch. The
statement's own rows are enough. Postings are never changed or deleted (triggers refuse it), and
every statement that writes postings passes this check, so before a statement each
transaction's postings already sum to zero on every ledger; they still do after it exactly when
the statement's own postings of that transaction sum to zero on every ledger. What is refused is
unchanged: a transaction split over two statements fails at the first, whose part does not
balance; a posting added later to a written transaction fails unless what is added balances by
itself, and then the transaction still does (the old check accepted that too). The checks that
the postings' transactions and accounts exist are as they were.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As migration 0009 set them: index probes whatever the tables' sizes, the search path pinned.
_SETTINGS = """
    SET enable_seqscan = off
    SET enable_mergejoin = off
    SET enable_hashjoin = off
    SET search_path FROM CURRENT
"""

_STATEMENT_SUMS = """
        -- The statement's own postings, per transaction and ledger: no index probe, no
        -- posting read back (see the module note for why that is the whole check).
        SELECT transaction_id, ledger INTO bad_transaction, bad_ledger
        FROM new_postings
        GROUP BY transaction_id, ledger
        HAVING sum(amount) <> 0
        LIMIT 1;
"""

# Migration 0009's, restored by a downgrade (each migration stands alone).
_TRANSACTION_SUMS = """
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
"""


def _guard(sums: str) -> str:
    """The guard function of migration 0009, its zero-sum query ``sums``."""
    return f"""
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
        {sums}
        IF FOUND THEN
            RAISE EXCEPTION 'transaction % does not sum to zero on ledger %',
                bad_transaction, bad_ledger
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$
    {_SETTINGS}
"""


def _replace(guard: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "SELECT set_config('search_path',"
        " quote_ident(current_schema()) || ', pg_catalog, pg_temp', true)"
    )
    op.execute(guard)


def upgrade() -> None:
    _replace(_guard(_STATEMENT_SUMS))


def downgrade() -> None:
    _replace(_guard(_TRANSACTION_SUMS))
