"""The zero-sum guard checks each INSERT statement of postings once, set-based, instead of one
deferred query per posting row at COMMIT; the same check makes sure every posting's transaction
exists, in place of the per-row foreign key.

The per-row constraint trigger ran a query per posting when the transaction committed: for a
batch of a thousand operations, about 2 500 queries inside COMMIT, which was the largest part of
PostgreSQL's time per batch. The statement-level trigger sees the statement's rows as a
transition table and, in one query, sums every posting of every transaction they touch; any
(transaction, ledger) that does not come to zero refuses the statement. The engine writes all
postings of a transaction (and of a batch) with one statement, so this holds for everything it
posts; a transaction split over several statements, or a posting added later to a transaction
already written, is refused at once. PostgreSQL only: SQLite has no transition tables, and the
engine's own check is its guard there.

The foreign key from ``posting.transaction_id`` ran one lookup per posting row, and its plan is
made once per connection: a connection that first checked while ``ledger_transaction`` was small
kept a sequential scan for good, and a batch of 2 000 postings then spent 1 to 2 seconds in it.
The trigger checks the statement's transactions in one query. Its function runs with
``enable_seqscan`` off, so that its plans (also made once per connection) take the indexes
however small the tables were when they were made.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENT_GUARD = [
    """
    CREATE FUNCTION ledger_check_zero_sum_statement() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        bad_transaction uuid;
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
    SET enable_seqscan = off
    SET search_path FROM CURRENT
    """,
    """
    CREATE TRIGGER posting_zero_sum_statement AFTER INSERT ON posting
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_zero_sum_statement()
    """,
]

ROW_GUARD = [
    """
    CREATE FUNCTION ledger_check_zero_sum() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        unbalanced text;
    BEGIN
        SELECT ledger INTO unbalanced FROM posting
        WHERE transaction_id = NEW.transaction_id
        GROUP BY ledger HAVING sum(amount) <> 0 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transaction % does not sum to zero on ledger %',
                NEW.transaction_id, unbalanced
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER posting_zero_sum AFTER INSERT ON posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_zero_sum()
    """,
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The function is created with the search path it must keep (``SET search_path FROM
    # CURRENT``): this schema, then the catalog, then the session's temporary schema last, so
    # that a temporary table named ``posting`` or ``ledger_transaction`` cannot stand in for
    # the real one inside the check.
    op.execute(
        "SELECT set_config('search_path',"
        " quote_ident(current_schema()) || ', pg_catalog, pg_temp', true)"
    )
    op.execute("DROP TRIGGER posting_zero_sum ON posting")
    op.execute("DROP FUNCTION ledger_check_zero_sum()")
    op.drop_constraint("fk_posting_transaction_id_ledger_transaction", "posting")
    for statement in STATEMENT_GUARD:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER posting_zero_sum_statement ON posting")
    op.execute("DROP FUNCTION ledger_check_zero_sum_statement()")
    op.create_foreign_key(
        "fk_posting_transaction_id_ledger_transaction",
        "posting",
        "ledger_transaction",
        ["transaction_id"],
        ["id"],
    )
    for statement in ROW_GUARD:
        op.execute(statement)
