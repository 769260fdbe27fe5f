"""The one place where PostgreSQL and SQLite differ for the engine, batches and settlement.

Everything else asks this module instead of testing ``dialect.name`` itself: which SQL locks
rows, bulk-reads by a list of ids, claims exactly-once rows, or takes an advisory lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, FromClause, Subquery, Table, select, text, true
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection


def is_postgresql(bind: AsyncSession | AsyncConnection | Connection) -> bool:
    """Whether ``bind`` talks to PostgreSQL (else SQLite, the embedded default)."""
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name == "postgresql"
    return bind.dialect.name == "postgresql"


# Settlement


async def take_settlement_lock(session: AsyncSession, lock_id: int, *, wait: bool) -> bool:
    """Take the transaction-level advisory lock ``lock_id`` on PostgreSQL; ``wait=False`` gives
    up at once (``False``) if another transaction holds it. On SQLite there is nothing to take:
    ``BEGIN IMMEDIATE`` already serialises every writer."""
    if not is_postgresql(session):
        return True
    if wait:
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        return True
    granted = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": lock_id})
    return bool(granted)


async def tune_settlement_transaction(session: AsyncSession, work_mem: str) -> None:
    """For this transaction only, on PostgreSQL: ``work_mem`` for its sorts and hashes (they
    spill to disk beyond it), and no JIT, whose compiling costs more than it saves on
    settlement's plans."""
    if is_postgresql(session):
        await session.execute(
            text("SELECT set_config('work_mem', :value, true), set_config('jit', 'off', true)"),
            {"value": work_mem},
        )


async def refresh_statistics(session: AsyncSession, table: str) -> None:
    """``ANALYZE`` a table inside the transaction that just wrote it, on PostgreSQL: the planner
    knows nothing of those rows until autovacuum's statistics, which come after the commit."""
    if is_postgresql(session):
        await session.execute(text(f"ANALYZE {table}"))


def join_by_id(
    session: AsyncSession, rows: Subquery, key: ColumnElement[Any], table: Table, *columns: str
) -> tuple[FromClause, ReadOnlyColumnCollection[str, ColumnElement[Any]]]:
    """``rows`` joined to ``table`` on ``table.id == key``, and ``columns`` of ``table`` to read.
    On PostgreSQL each row is looked up by the primary key (LATERAL, the LIMIT keeping it from
    being flattened into a join), so that a guess of few matches cannot make the planner scan
    all of ``table`` instead; SQLite looks rows up by primary key anyway."""
    if is_postgresql(session):
        lookup = (
            select(*(table.c[name] for name in columns))
            .where(table.c.id == key)
            .limit(1)
            .lateral(f"{table.name}_by_id")
        )
        return rows.join(lookup, true()), lookup.c
    return rows.join(table, table.c.id == key), table.c
