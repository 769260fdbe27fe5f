"""Nightly settlement: batches, their entries, cursors, obligations, positions, instructions,
signed statements, and the webhook outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 15:44:16.125399
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Settlement rows are written once, with their batch, and never change; a batch goes from open to
# complete (in the transaction that writes it) and from complete to paid, and no other way.
_IMMUTABLE = (
    "settlement_entry",
    "settlement_cursor",
    "settlement_obligation",
    "settlement_position",
    "settlement_instruction",
    "settlement_statement",
)
_FIXED = ("id", "business_date", "cutoff_at", "currency", "minor_exponent", "created_at")

POSTGRES_GUARDS = [
    """
    CREATE FUNCTION settlement_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'settlement rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    *(
        f"""
        CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION settlement_refuse_change()
        """
        for table in _IMMUTABLE
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION settlement_refuse_change()
        """
        for table in (*_IMMUTABLE, "settlement_batch")
    ),
    """
    CREATE TRIGGER settlement_batch_no_delete BEFORE DELETE ON settlement_batch
    FOR EACH ROW EXECUTE FUNCTION settlement_refuse_change()
    """,
    f"""
    CREATE FUNCTION settlement_batch_transition() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT (
            (OLD.status = 'open' AND NEW.status = 'complete' AND NEW.settle_transaction_id IS NULL)
            OR (OLD.status = 'complete' AND NEW.status = 'paid'
                AND NEW.postings = OLD.postings AND NEW.completed_at = OLD.completed_at)
        ) OR ({", ".join("NEW." + c for c in _FIXED)})
            IS DISTINCT FROM ({", ".join("OLD." + c for c in _FIXED)})
        THEN
            RAISE EXCEPTION 'settlement batch % (%): % to % refused; a paid batch is immutable',
                OLD.business_date, OLD.status, TG_OP, NEW.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER settlement_batch_transition BEFORE UPDATE ON settlement_batch
    FOR EACH ROW EXECUTE FUNCTION settlement_batch_transition()
    """,
]

SQLITE_GUARDS = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'settlement rows are immutable'); END
        """
        for table in _IMMUTABLE
        for op in ("update", "delete")
    ),
    """
    CREATE TRIGGER settlement_batch_no_delete BEFORE DELETE ON settlement_batch
    BEGIN SELECT RAISE(ABORT, 'settlement rows are immutable'); END
    """,
    f"""
    CREATE TRIGGER settlement_batch_transition BEFORE UPDATE ON settlement_batch
    WHEN NOT (
        (OLD.status = 'open' AND NEW.status = 'complete' AND NEW.settle_transaction_id IS NULL)
        OR (OLD.status = 'complete' AND NEW.status = 'paid'
            AND NEW.postings IS OLD.postings AND NEW.completed_at IS OLD.completed_at)
    ) OR {" OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FIXED)}
    BEGIN SELECT RAISE(ABORT, 'a settlement batch goes open, complete, paid; a paid batch is immutable'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "settlement_entry",
        sa.Column("posting_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("posting_id", name=op.f("pk_settlement_entry")),
    )
    with op.batch_alter_table("settlement_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_entry_batch_id", ["batch_id"], unique=False, postgresql_using="brin"
        )

    op.create_table(
        "outbox_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_event_attempts")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_outbox_event_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_event")),
    )
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_event_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("delivered_at IS NULL"),
            sqlite_where=sa.text("delivered_at IS NULL"),
        )
        batch_op.create_index("ix_outbox_event_partner_id", ["partner_id"], unique=False)

    op.create_table(
        "settlement_batch",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("cutoff_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("minor_exponent", sa.SmallInteger(), nullable=False),
        sa.Column("postings", sa.BigInteger(), nullable=False),
        sa.Column("settle_transaction_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'open') = (completed_at IS NULL)",
            name=op.f("ck_settlement_batch_completed_at"),
        ),
        sa.CheckConstraint(
            "(status = 'paid') = (paid_at IS NOT NULL)", name=op.f("ck_settlement_batch_paid_at")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'complete', 'paid')", name=op.f("ck_settlement_batch_status")
        ),
        sa.CheckConstraint(
            "minor_exponent BETWEEN 0 AND 6", name=op.f("ck_settlement_batch_minor_exponent")
        ),
        sa.CheckConstraint("postings >= 0", name=op.f("ck_settlement_batch_postings")),
        sa.ForeignKeyConstraint(
            ["settle_transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_settlement_batch_settle_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batch")),
        sa.UniqueConstraint("business_date", name=op.f("uq_settlement_batch_business_date")),
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
    op.create_table(
        "settlement_instruction",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("payer_partner_id", sa.Uuid(), nullable=False),
        sa.Column("payee_partner_id", sa.Uuid(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_settlement_instruction_amount_minor")),
        sa.CheckConstraint(
            "payer_partner_id <> payee_partner_id",
            name=op.f("ck_settlement_instruction_distinct_partners"),
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_settlement_instruction_seq")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_instruction_batch_id_settlement_batch"),
        ),
        sa.ForeignKeyConstraint(
            ["payee_partner_id"],
            ["partner.id"],
            name=op.f("fk_settlement_instruction_payee_partner_id_partner"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_partner_id"],
            ["partner.id"],
            name=op.f("fk_settlement_instruction_payer_partner_id_partner"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "seq", name=op.f("pk_settlement_instruction")),
    )
    op.create_table(
        "settlement_obligation",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("debtor_partner_id", sa.Uuid(), nullable=False),
        sa.Column("creditor_partner_id", sa.Uuid(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "amount_micros > 0", name=op.f("ck_settlement_obligation_amount_micros")
        ),
        sa.CheckConstraint(
            "debtor_partner_id <> creditor_partner_id",
            name=op.f("ck_settlement_obligation_distinct_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_obligation_batch_id_settlement_batch"),
        ),
        sa.ForeignKeyConstraint(
            ["creditor_partner_id"],
            ["partner.id"],
            name=op.f("fk_settlement_obligation_creditor_partner_id_partner"),
        ),
        sa.ForeignKeyConstraint(
            ["debtor_partner_id"],
            ["partner.id"],
            name=op.f("fk_settlement_obligation_debtor_partner_id_partner"),
        ),
        sa.PrimaryKeyConstraint(
            "batch_id",
            "debtor_partner_id",
            "creditor_partner_id",
            name=op.f("pk_settlement_obligation"),
        ),
    )
    op.create_table(
        "settlement_position",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("gross_owed_micros", sa.BigInteger(), nullable=False),
        sa.Column("gross_owing_micros", sa.BigInteger(), nullable=False),
        sa.Column("net_micros", sa.BigInteger(), nullable=False),
        sa.Column("carry_in_micros", sa.BigInteger(), nullable=False),
        sa.Column("payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("carry_out_micros", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "gross_owed_micros >= 0 AND gross_owing_micros >= 0",
            name=op.f("ck_settlement_position_gross"),
        ),
        sa.CheckConstraint(
            "net_micros = gross_owed_micros - gross_owing_micros",
            name=op.f("ck_settlement_position_net"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_position_batch_id_settlement_batch"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_settlement_position_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("batch_id", "partner_id", name=op.f("pk_settlement_position")),
    )
    op.create_table(
        "settlement_statement",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batch.id"],
            name=op.f("fk_settlement_statement_batch_id_settlement_batch"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_settlement_statement_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("batch_id", "partner_id", name=op.f("pk_settlement_statement")),
        sa.UniqueConstraint(
            "partner_id",
            "business_date",
            name=op.f("uq_settlement_statement_partner_id_business_date"),
        ),
    )
    guards = POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("settlement_statement")
    op.drop_table("settlement_position")
    op.drop_table("settlement_obligation")
    op.drop_table("settlement_instruction")
    op.drop_table("settlement_cursor")
    op.drop_table("settlement_batch")
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_event_partner_id")
        batch_op.drop_index(
            "ix_outbox_event_due",
            postgresql_where=sa.text("delivered_at IS NULL"),
            sqlite_where=sa.text("delivered_at IS NULL"),
        )

    op.drop_table("outbox_event")
    with op.batch_alter_table("settlement_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_entry_batch_id", postgresql_using="brin")

    op.drop_table("settlement_entry")
    # Dropping a table drops its triggers; the trigger functions go by hand.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION settlement_batch_transition()")
        op.execute("DROP FUNCTION settlement_refuse_change()")
