"""Pricing: effective-dated point values and rate versions, and quotes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:37:54.631015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A version is superseded by a newer one, never changed or removed; a quote changes once, when a
# conversion spends it (used_at from NULL to a time), and in nothing else.
_QUOTE_FIXED_COLUMNS = (
    "id, partner_id, rate_version_id, from_partner_id, to_partner_id, member_ref, to_member_ref,"
    " points, fee, out, source_value_micros, destination_value_micros, expires_at, created_at"
)

POSTGRES_GUARDS = [
    """
    CREATE FUNCTION pricing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'pricing rows are immutable: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    """
    CREATE TRIGGER point_value_immutable BEFORE UPDATE OR DELETE ON point_value
    FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()
    """,
    """
    CREATE TRIGGER rate_version_immutable BEFORE UPDATE OR DELETE ON rate_version
    FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()
    """,
    f"""
    CREATE TRIGGER quote_fixed BEFORE UPDATE OF {_QUOTE_FIXED_COLUMNS} ON quote
    FOR EACH ROW EXECUTE FUNCTION pricing_refuse_change()
    """,
    """
    CREATE TRIGGER quote_spent_once BEFORE UPDATE OF used_at ON quote
    FOR EACH ROW WHEN (OLD.used_at IS NOT NULL) EXECUTE FUNCTION pricing_refuse_change()
    """,
]

SQLITE_GUARDS = [
    """
    CREATE TRIGGER point_value_no_update BEFORE UPDATE ON point_value
    BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
    """,
    """
    CREATE TRIGGER point_value_no_delete BEFORE DELETE ON point_value
    BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
    """,
    """
    CREATE TRIGGER rate_version_no_update BEFORE UPDATE ON rate_version
    BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
    """,
    """
    CREATE TRIGGER rate_version_no_delete BEFORE DELETE ON rate_version
    BEGIN SELECT RAISE(ABORT, 'pricing rows are immutable'); END
    """,
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


def upgrade() -> None:
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
    guards = POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("quote")
    op.drop_table("rate_version")
    op.drop_table("point_value")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION pricing_refuse_change()")
