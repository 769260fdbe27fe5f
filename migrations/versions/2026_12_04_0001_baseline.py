"""The whole schema: the signed double-entry ledger, the signed API, pricing, the outbox and
nightly settlement, with the guards by which the database itself refuses what must never happen.

What the database holds, whatever code runs against it:

* Postings and transactions are never changed or removed; accounts and partners are never
  removed (row triggers on both databases, and on PostgreSQL ``TRUNCATE`` triggers too).
  Pricing rows are superseded, never changed; a quote changes once, when a conversion spends it
  (``used_at`` from ``NULL`` to a time). Settlement rows are written once with their batch, and a
  batch goes from open to complete and from complete to paid, and no other way.
* On PostgreSQL, every INSERT statement of postings is checked once, set-based, by a statement
  trigger (``posting_zero_sum_statement``) that sees the statement's rows as a transition table:
  each posting's transaction and account must exist, and the statement's own postings of each
  transaction must sum to zero on every ledger. That last check is the whole zero-sum check:
  postings are never changed or deleted and every statement that writes postings passes it, so
  before a statement each transaction already sums to zero on every ledger, and after it exactly
  when the statement's own postings of that transaction do. A transaction split over two
  statements fails at the first; a posting added later to a written transaction fails unless
  what is added balances by itself. ``ledger_transaction_references`` checks the same way that
  each new transaction's partner, and the transaction it reverses, exist. These take the place
  of the foreign keys ``posting.transaction_id``, ``posting.account_id``,
  ``ledger_transaction.partner_id`` and ``ledger_transaction.reverses_id``, whose check ran one
  query per row (and kept a plan made once per connection, a sequential scan when the table was
  small). SQLite has no transition tables: it keeps those foreign keys, and the engine's own
  check is its zero-sum guard.
* The guard functions run with sequential scans and hash and merge joins off, so that each check
  is index probes whatever the tables' sizes, and with the search path they were created with
  (this schema, the catalog, then the session's temporary schema last), so that a temporary
  table named ``posting`` or ``ledger_transaction`` cannot stand in for the real one.

For the planner and the heap (PostgreSQL only): ``account`` rows leave half of each page free
(fillfactor 50), so that moving an account's head, which every posting does and which touches no
indexed column, is a heap-only update; idempotency records keep their answers compressed with
LZ4 where the server has it; the ``posting_pairs`` statistics tell the planner how few
(account, counterparty) groups a day of postings makes; ``ix_ledger_transaction_reverses_id``
holds only reversals, which is all that looks it up.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 16:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Set on each guard function: index probes whatever the tables' sizes, the search path pinned.
_GUARD_SETTINGS = """
    SET enable_seqscan = off
    SET enable_mergejoin = off
    SET enable_hashjoin = off
    SET search_path FROM CURRENT
"""

LEDGER_GUARDS_POSTGRES = [
    """
    CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    *(
        f"""
        CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in ("posting", "ledger_transaction")
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in ("account", "partner")
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
        """
        for table in ("posting", "ledger_transaction", "account", "partner")
    ),
    f"""
    CREATE FUNCTION ledger_check_zero_sum_statement() RETURNS trigger
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
        -- The statement's own postings, per transaction and ledger: no index probe, no
        -- posting read back (see the module note for why that is the whole check).
        SELECT transaction_id, ledger INTO bad_transaction, bad_ledger
        FROM new_postings
        GROUP BY transaction_id, ledger
        HAVING sum(amount) <> 0
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transaction % does not sum to zero on ledger %',
                bad_transaction, bad_ledger
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$
    {_GUARD_SETTINGS}
    """,
    """
    CREATE TRIGGER posting_zero_sum_statement AFTER INSERT ON posting
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_zero_sum_statement()
    """,
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
    {_GUARD_SETTINGS}
    """,
    """
    CREATE TRIGGER ledger_transaction_references AFTER INSERT ON ledger_transaction
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_transaction_references()
    """,
]

LEDGER_GUARDS_SQLITE = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END
        """
        for table in ("posting", "ledger_transaction")
        for action in ("update", "delete")
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable: DELETE on {table} refused'); END
        """
        for table in ("account", "partner")
    ),
]

_QUOTE_FIXED_COLUMNS = (
    "id, partner_id, rate_version_id, from_partner_id, to_partner_id, member_ref, to_member_ref,"
    " points, fee, out, source_value_micros, destination_value_micros, expires_at, created_at"
)

PRICING_GUARDS_POSTGRES = [
    """
    CREATE FUNCTION pricing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'pricing rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    *(
        f"""
        CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()
        """
        for table in ("point_value", "rate_version")
    ),
    f"""
    CREATE TRIGGER quote_fixed BEFORE UPDATE OF {_QUOTE_FIXED_COLUMNS} ON quote
    FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()
    """,
    """
    CREATE TRIGGER quote_spent_once BEFORE UPDATE OF used_at ON quote
    FOR EACH ROW WHEN (OLD.used_at IS NOT NULL) EXECUTE FUNCTION pricing_refuse_change()
    """,
]

PRICING_GUARDS_SQLITE = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
        """
        for table in ("point_value", "rate_version")
        for action in ("update", "delete")
    ),
    f"""
    CREATE TRIGGER quote_fixed BEFORE UPDATE OF {_QUOTE_FIXED_COLUMNS} ON quote
    BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
    """,
    """
    CREATE TRIGGER quote_spent_once BEFORE UPDATE OF used_at ON quote
    WHEN OLD.used_at IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a quote is spent once'); END
    """,
]

_SETTLEMENT_IMMUTABLE = (
    "settlement_range",
    "settlement_obligation",
    "settlement_position",
    "settlement_instruction",
    "settlement_statement",
)
_BATCH_FIXED = ("id", "business_date", "cutoff_at", "currency", "minor_exponent", "created_at")

SETTLEMENT_GUARDS_POSTGRES = [
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
        for table in _SETTLEMENT_IMMUTABLE
    ),
    *(
        f"""
        CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION settlement_refuse_change()
        """
        for table in (*_SETTLEMENT_IMMUTABLE, "settlement_batch")
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
        ) OR ({", ".join("NEW." + c for c in _BATCH_FIXED)})
            IS DISTINCT FROM ({", ".join("OLD." + c for c in _BATCH_FIXED)})
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

SETTLEMENT_GUARDS_SQLITE = [
    *(
        f"""
        CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, 'settlement rows are immutable'); END
        """
        for table in _SETTLEMENT_IMMUTABLE
        for action in ("update", "delete")
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
    ) OR {" OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _BATCH_FIXED)}
    BEGIN SELECT RAISE(ABORT, 'a settlement batch goes open, complete, paid; a paid batch is immutable'); END
    """,
]


def _row_checked(*foreign_keys: sa.ForeignKeyConstraint) -> list[sa.ForeignKeyConstraint]:
    """Foreign keys that SQLite keeps; on PostgreSQL the statement triggers check them."""
    return [] if op.get_bind().dialect.name == "postgresql" else list(foreign_keys)


def _has_lz4() -> bool:
    return bool(
        op.get_bind().scalar(
            sa.text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                " WHERE name = 'default_toast_compression'"
            )
        )
    )


def _ledger() -> None:
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
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('issue', 'redeem', 'transfer', 'convert', 'donate', 'hold', 'capture', 'void', 'reverse', 'settle')",
            name=op.f("ck_ledger_transaction_kind"),
        ),
        sa.CheckConstraint("points >= 0", name=op.f("ck_ledger_transaction_points")),
        *_row_checked(
            sa.ForeignKeyConstraint(
                ["partner_id"],
                ["partner.id"],
                name=op.f("fk_ledger_transaction_partner_id_partner"),
            ),
            sa.ForeignKeyConstraint(
                ["reverses_id"],
                ["ledger_transaction.id"],
                name=op.f("fk_ledger_transaction_reverses_id_ledger_transaction"),
            ),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transaction")),
    )
    op.create_index(
        "ix_ledger_transaction_reverses_id",
        "ledger_transaction",
        ["reverses_id"],
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_id IS NOT NULL"),
    )
    # A batch item's idempotency key names one transaction of its partner, for good. Single
    # POSTs keep their Idempotency-Key too, outside the index: the partner may use it again once
    # the request's 24 h record has lapsed.
    op.create_index(
        "uq_ledger_transaction_batch_item_key",
        "ledger_transaction",
        ["partner_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )
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
    op.create_index("ix_partner_key_partner_id", "partner_key", ["partner_id"])
    op.create_table(
        "account",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
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
    op.create_index("uq_account_member_id", "account", ["member_id"], unique=True)
    op.create_index(
        "uq_account_pool",
        "account",
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
    op.create_index("ix_hold_account_id_status", "hold", ["account_id", "status"])
    op.create_table(
        "posting",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("ledger", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counterparty_account_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_posting_amount")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_posting_seq")),
        *_row_checked(
            sa.ForeignKeyConstraint(
                ["account_id"], ["account.id"], name=op.f("fk_posting_account_id_account")
            ),
            sa.ForeignKeyConstraint(
                ["transaction_id"],
                ["ledger_transaction.id"],
                name=op.f("fk_posting_transaction_id_ledger_transaction"),
            ),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posting")),
        sa.UniqueConstraint("account_id", "seq", name=op.f("uq_posting_account_id_seq")),
    )
    op.create_index("ix_posting_transaction_id", "posting", ["transaction_id"])


def _signed_api() -> None:
    op.create_table(
        "signature_nonce",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce", name=op.f("pk_signature_nonce")),
    )
    op.create_index("ix_signature_nonce_expires_at", "signature_nonce", ["expires_at"])
    op.create_table(
        "idempotency_record",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=False),
        sa.Column("response_content_type", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_idempotency_record_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("partner_id", "key", name=op.f("pk_idempotency_record")),
    )
    op.create_index("ix_idempotency_record_expires_at", "idempotency_record", ["expires_at"])


def _pricing() -> None:
    op.create_table(
        "point_value",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("micros_per_point", sa.BigInteger(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "micros_per_point > 0 AND micros_per_point <= 1000000",
            name=op.f("ck_point_value_micros_per_point"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_point_value_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_point_value")),
        sa.UniqueConstraint(
            "partner_id", "effective_at", name=op.f("uq_point_value_partner_id_effective_at")
        ),
    )
    op.create_table(
        "rate_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("from_partner_id", sa.Uuid(), nullable=False),
        sa.Column("to_partner_id", sa.Uuid(), nullable=False),
        sa.Column("from_points", sa.BigInteger(), nullable=False),
        sa.Column("to_points", sa.BigInteger(), nullable=False),
        sa.Column("fee_bps", sa.SmallInteger(), nullable=False),
        sa.Column("min_points", sa.BigInteger(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fee_bps >= 0 AND fee_bps <= 10000", name=op.f("ck_rate_version_fee_bps")
        ),
        sa.CheckConstraint(
            "from_partner_id <> to_partner_id", name=op.f("ck_rate_version_distinct_brands")
        ),
        sa.CheckConstraint(
            "from_points > 0 AND to_points > 0", name=op.f("ck_rate_version_points")
        ),
        sa.CheckConstraint("min_points >= 0", name=op.f("ck_rate_version_min_points")),
        sa.ForeignKeyConstraint(
            ["from_partner_id"],
            ["partner.id"],
            name=op.f("fk_rate_version_from_partner_id_partner"),
        ),
        sa.ForeignKeyConstraint(
            ["to_partner_id"], ["partner.id"], name=op.f("fk_rate_version_to_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_version")),
        sa.UniqueConstraint(
            "from_partner_id",
            "to_partner_id",
            "effective_at",
            name=op.f("uq_rate_version_from_partner_id_to_partner_id_effective_at"),
        ),
    )
    op.create_table(
        "quote",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("rate_version_id", sa.Uuid(), nullable=False),
        sa.Column("from_partner_id", sa.Uuid(), nullable=False),
        sa.Column("to_partner_id", sa.Uuid(), nullable=False),
        sa.Column("member_ref", sa.String(length=128), nullable=False),
        sa.Column("to_member_ref", sa.String(length=128), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("out", sa.BigInteger(), nullable=False),
        sa.Column("source_value_micros", sa.BigInteger(), nullable=False),
        sa.Column("destination_value_micros", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_quote_expiry")),
        sa.CheckConstraint("fee >= 0 AND fee <= points", name=op.f("ck_quote_fee")),
        sa.CheckConstraint("out > 0", name=op.f("ck_quote_out")),
        sa.CheckConstraint("points > 0", name=op.f("ck_quote_points")),
        sa.CheckConstraint(
            "source_value_micros > 0 AND destination_value_micros > 0",
            name=op.f("ck_quote_values"),
        ),
        sa.ForeignKeyConstraint(
            ["from_partner_id"], ["partner.id"], name=op.f("fk_quote_from_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_quote_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["rate_version_id"],
            ["rate_version.id"],
            name=op.f("fk_quote_rate_version_id_rate_version"),
        ),
        sa.ForeignKeyConstraint(
            ["to_partner_id"], ["partner.id"], name=op.f("fk_quote_to_partner_id_partner")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quote")),
    )


def _outbox() -> None:
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
    op.create_index(
        "ix_outbox_event_due",
        "outbox_event",
        ["next_attempt_at"],
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )
    op.create_index("ix_outbox_event_partner_id", "outbox_event", ["partner_id"])


def _settlement() -> None:
    op.create_table(
        "settlement_batch",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
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
    # Per batch and money account, the range of sequence numbers it took, chained by its
    # constraints so that no posting is in two batches and none is skipped (an account's first
    # range starts at NULL).
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


def _postgres_tuning() -> None:
    op.execute("ALTER TABLE account SET (fillfactor = 50)")
    if _has_lz4():
        op.execute("ALTER TABLE idempotency_record ALTER COLUMN response_body SET COMPRESSION lz4")
    op.execute(
        "CREATE STATISTICS posting_pairs (ndistinct)"
        " ON account_id, counterparty_account_id FROM posting"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # The guard functions keep this search path (``SET search_path FROM CURRENT``).
        op.execute(
            "SELECT set_config('search_path',"
            " quote_ident(current_schema()) || ', pg_catalog, pg_temp', true)"
        )
    _ledger()
    _signed_api()
    _pricing()
    _outbox()
    _settlement()
    if postgres:
        _postgres_tuning()
        guards = LEDGER_GUARDS_POSTGRES + PRICING_GUARDS_POSTGRES + SETTLEMENT_GUARDS_POSTGRES
    else:
        guards = LEDGER_GUARDS_SQLITE + PRICING_GUARDS_SQLITE + SETTLEMENT_GUARDS_SQLITE
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    # Dropping a table drops its triggers, indexes and statistics; the functions go by hand.
    for table in (
        "settlement_range",
        "settlement_statement",
        "settlement_position",
        "settlement_obligation",
        "settlement_instruction",
        "settlement_batch",
        "outbox_event",
        "quote",
        "rate_version",
        "point_value",
        "idempotency_record",
        "signature_nonce",
        "posting",
        "hold",
        "account",
        "partner_key",
        "member",
        "ledger_transaction",
        "partner",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        for function in (
            "settlement_batch_transition",
            "settlement_refuse_change",
            "pricing_refuse_change",
            "ledger_check_transaction_references",
            "ledger_check_zero_sum_statement",
            "ledger_refuse_change",
        ):
            op.execute(f"DROP FUNCTION {function}()")
