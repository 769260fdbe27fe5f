"""The signed double-entry ledger: partners, keys, members, accounts, transactions, postings, holds.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:28:24.538081
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The database itself refuses what must never happen to the ledger, whatever code runs against it.
POSTGRES_GUARDS = [
    """
    CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    """
    CREATE TRIGGER posting_immutable BEFORE UPDATE OR DELETE ON posting
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER posting_no_truncate BEFORE TRUNCATE ON posting
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER ledger_transaction_immutable BEFORE UPDATE OR DELETE ON ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """,
    """
    CREATE TRIGGER ledger_transaction_no_truncate BEFORE TRUNCATE ON ledger_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
    """,
    # Checked at commit, once every posting of the transaction is in.
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

SQLITE_GUARDS = [
    """
    CREATE TRIGGER posting_no_update BEFORE UPDATE ON posting
    BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
    """,
    """
    CREATE TRIGGER posting_no_delete BEFORE DELETE ON posting
    BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
    """,
    """
    CREATE TRIGGER ledger_transaction_no_update BEFORE UPDATE ON ledger_transaction
    BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
    """,
    """
    CREATE TRIGGER ledger_transaction_no_delete BEFORE DELETE ON ledger_transaction
    BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
    """,
]


def _guards() -> list[str]:
    return POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS


def upgrade() -> None:

    op.create_table(
        "partner",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("min_donation_points", sa.Integer(), nullable=True),
        sa.Column("shards", sa.SmallInteger(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'brand') = (currency IS NOT NULL)", name=op.f("ck_partner_brand_currency")
        ),
        sa.CheckConstraint(
            "kind IN ('brand', 'charity', 'operator')", name=op.f("ck_partner_kind")
        ),
        sa.CheckConstraint(
            "min_donation_points IS NULL OR min_donation_points >= 1",
            name=op.f("ck_partner_min_donation"),
        ),
        sa.CheckConstraint("shards >= 1", name=op.f("ck_partner_shards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner")),
        sa.UniqueConstraint("currency", name=op.f("uq_partner_currency")),
    )
    op.create_table(
        "ledger_transaction",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("rate_version_id", sa.Uuid(), nullable=True),
        sa.Column("reverses_id", sa.Uuid(), nullable=True),
        sa.Column("hold_id", sa.Uuid(), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('issue', 'redeem', 'transfer', 'convert', 'donate', 'hold', 'capture', 'void', 'reverse', 'settle')",
            name=op.f("ck_ledger_transaction_kind"),
        ),
        sa.CheckConstraint("points >= 0", name=op.f("ck_ledger_transaction_points")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_ledger_transaction_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_ledger_transaction_reverses_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transaction")),
    )
    with op.batch_alter_table("ledger_transaction", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_transaction_reverses_id", ["reverses_id"], unique=False)

    op.create_table(
        "member",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("member_ref", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_member_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member")),
        sa.UniqueConstraint(
            "partner_id", "member_ref", name=op.f("uq_member_partner_id_member_ref")
        ),
    )
    op.create_table(
        "partner_key",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("secret_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(alg = 'ed25519' AND public_key IS NOT NULL AND secret_ciphertext IS NULL) OR (alg = 'hmac-sha256' AND public_key IS NULL AND secret_ciphertext IS NOT NULL AND secret_nonce IS NOT NULL)",
            name=op.f("ck_partner_key_material"),
        ),
        sa.CheckConstraint("alg IN ('ed25519', 'hmac-sha256')", name=op.f("ck_partner_key_alg")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_partner_key_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_key")),
    )
    with op.batch_alter_table("partner_key", schema=None) as batch_op:
        batch_op.create_index("ix_partner_key_partner_id", ["partner_id"], unique=False)

    op.create_table(
        "account",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ledger", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=True),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'member') = (member_id IS NOT NULL)", name=op.f("ck_account_member_owner")
        ),
        sa.CheckConstraint(
            "kind <> 'member' OR balance - held >= 0", name=op.f("ck_account_member_available")
        ),
        sa.CheckConstraint(
            "kind IN ('member', 'issuance', 'settlement')", name=op.f("ck_account_kind")
        ),
        sa.CheckConstraint("held >= 0", name=op.f("ck_account_held")),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_account_seq")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_account_member_id_member")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_account_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index("uq_account_member_id", ["member_id"], unique=True)
        batch_op.create_index(
            "uq_account_pool",
            ["partner_id", "kind", "ledger", "shard"],
            unique=True,
            postgresql_where=sa.text("member_id IS NULL"),
            sqlite_where=sa.text("member_id IS NULL"),
        )

    op.create_table(
        "hold",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'voided', 'expired')", name=op.f("ck_hold_status")
        ),
        sa.CheckConstraint("captured >= 0 AND captured <= points", name=op.f("ck_hold_captured")),
        sa.CheckConstraint("points > 0", name=op.f("ck_hold_points")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_hold_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_hold_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_hold_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold")),
    )
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.create_index("ix_hold_account_id_status", ["account_id", "status"], unique=False)

    op.create_table(
        "posting",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("ledger", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_posting_amount")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_posting_seq")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_posting_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_posting_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posting")),
        sa.UniqueConstraint("account_id", "seq", name=op.f("uq_posting_account_id_seq")),
    )
    with op.batch_alter_table("posting", schema=None) as batch_op:
        batch_op.create_index("ix_posting_transaction_id", ["transaction_id"], unique=False)

    for statement in _guards():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP TABLE posting, hold, account, partner_key, member, ledger_transaction, partner CASCADE"
        )
        op.execute("DROP FUNCTION ledger_check_zero_sum()")
        op.execute("DROP FUNCTION ledger_refuse_change()")
        return

    with op.batch_alter_table("posting", schema=None) as batch_op:
        batch_op.drop_index("ix_posting_transaction_id")

    op.drop_table("posting")
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_index("ix_hold_account_id_status")

    op.drop_table("hold")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_account_pool",
            postgresql_where=sa.text("member_id IS NULL"),
            sqlite_where=sa.text("member_id IS NULL"),
        )
        batch_op.drop_index("uq_account_member_id")

    op.drop_table("account")
    with op.batch_alter_table("partner_key", schema=None) as batch_op:
        batch_op.drop_index("ix_partner_key_partner_id")

    op.drop_table("partner_key")
    op.drop_table("member")
    with op.batch_alter_table("ledger_transaction", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transaction_reverses_id")

    op.drop_table("ledger_transaction")
    op.drop_table("partner")
