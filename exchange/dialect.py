"""The one place where PostgreSQL and SQLite differ for the engine, batches and settlement.

Everything else asks this module instead of testing ``dialect.name`` itself: which SQL locks
rows, bulk-reads by a list of ids, claims exactly-once rows, or takes an advisory lock.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def is_postgresql(bind: AsyncSession | AsyncConnection | Connection) -> bool:
    """Whether ``bind`` talks to PostgreSQL (else SQLite, the embedded default)."""
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name == "postgresql"
    return bind.dialect.name == "postgresql"
