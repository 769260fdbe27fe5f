"""Account rows leave room on their pages, so that moving a head is a HOT update.

Every posting rewrites its account's row (balance, seq, head hash). None of those columns is
indexed, so PostgreSQL can write the new version beside the old one without touching an index
(a heap-only tuple), but only when the page has room for it. With the default fillfactor of 100
the pages were full from the start: under the batches benchmark six updates in ten went to another
page, each adding an entry to the primary key and to the member index. With a fillfactor of 50,
which keeps half of each new page free for the next versions, all but a handful are HOT
(1 303 013 of 1 303 036 in one run).
``ALTER TABLE ... SET (fillfactor)`` applies to pages written from now on. SQLite has no such
setting.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 23:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE account SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE account RESET (fillfactor)")
