"""The daily rollup of the operator's reports (``exchange.reporting.models``): per closed
business day, volumes per brand and transaction kind, conversion flows per pair of brands,
donations per charity and brand, members active per day, first earns (cohorts) and what each
cohort earned; and an index on ``ledger_transaction.created_at`` that bounds a day's reading."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _points(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "reporting_day",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("business_date", name="pk_reporting_day"),
    )
    op.create_table(
        "reporting_volume",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        *_points("points_in", "points_out", "postings"),
        sa.PrimaryKeyConstraint("business_date", "brand_id", "kind", name="pk_reporting_volume"),
    )
    op.create_table(
        "reporting_flow",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("from_brand_id", sa.Uuid(), nullable=False),
        sa.Column("to_brand_id", sa.Uuid(), nullable=False),
        *_points("points_out", "points_in", "conversions"),
        sa.PrimaryKeyConstraint(
            "business_date", "from_brand_id", "to_brand_id", name="pk_reporting_flow"
        ),
    )
    op.create_table(
        "reporting_donation",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("charity_id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        *_points("points", "value_micros", "donations"),
        sa.PrimaryKeyConstraint(
            "business_date", "charity_id", "brand_id", name="pk_reporting_donation"
        ),
    )
    op.create_table(
        "reporting_member_day",
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        *_points("earned", "burned"),
        sa.PrimaryKeyConstraint(
            "brand_id", "business_date", "account_id", name="pk_reporting_member_day"
        ),
    )
    op.create_table(
        "reporting_member",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("first_earn_date", sa.Date(), nullable=False),
        sa.Column("cohort", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_reporting_member"),
    )
    op.create_index(
        "ix_reporting_member_brand_id_cohort", "reporting_member", ["brand_id", "cohort"]
    )
    op.create_table(
        "reporting_cohort_day",
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("cohort", sa.Date(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        *_points("earned"),
        sa.PrimaryKeyConstraint(
            "brand_id", "cohort", "business_date", name="pk_reporting_cohort_day"
        ),
    )
    op.create_index("ix_ledger_transaction_created_at", "ledger_transaction", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_transaction_created_at", "ledger_transaction")
    for table in (
        "reporting_cohort_day", "reporting_member", "reporting_member_day",
        "reporting_donation", "reporting_flow", "reporting_volume", "reporting_day",
    ):  # fmt: skip
        op.drop_table(table)
