"""The one place where PostgreSQL and SQLite differ for the engine, batches and settlement.

Everything else asks this module instead of testing ``dialect.name`` itself: which SQL locks
rows, bulk-reads by a list of ids, claims exactly-once rows, or takes an advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, Mapping, Sequence
from itertools import repeat
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    FromClause,
    Select,
    Subquery,
    Table,
    any_,
    bindparam,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from exchange.base import utcnow


def is_postgresql(bind: AsyncSession | AsyncConnection | Connection) -> bool:
    """Whether ``bind`` talks to PostgreSQL (else SQLite, the embedded default)."""
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name == "postgresql"
    return bind.dialect.name == "postgresql"


# Ledger

_T = TypeVar("_T")


def for_dialect(bind: AsyncSession | AsyncConnection, *, postgresql: _T, sqlite: _T) -> _T:
    """``postgresql`` on PostgreSQL, else ``sqlite``: the pick between two forms of a statement
    built once, where building one per request would cost more than running it."""
    return postgresql if is_postgresql(bind) else sqlite


def one_of(bind: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one bound array, so that the
    statement's text (and asyncpg's prepared statement for it) is the same however many values
    there are. ``IN`` expands to one parameter per value: a new statement to compile and prepare
    for every length, and a thousand parameters to render for a batch."""
    if is_postgresql(bind):
        return cast(
            ColumnElement[bool],
            column == any_(bindparam(None, list(values), type_=ARRAY(column.type))),
        )
    return cast(ColumnElement[bool], column.in_(values))


def probe_each(
    bind: AsyncSession, query: Select[Any], column: Any, values: Sequence[Any]
) -> Select[Any]:
    """The rows of ``query`` whose ``column`` (unique in ``query``) is one of ``values``.

    On PostgreSQL, one probe of ``column``'s index per value, whatever the table's size or
    statistics: a LIMIT keeps the lateral subquery from being flattened into a join, so the
    planner cannot trade the probes for a scan of every row ``query`` allows (which a stale
    estimate of a young table invites, and which a generic plan over a 1 000-element IN list
    makes a thousand comparisons a row). Elsewhere ``column IN values``."""
    if not is_postgresql(bind):
        return query.where(column.in_(values))
    wanted = (
        func.unnest(bindparam(None, list(values), type_=ARRAY(column.type)))
        .table_valued("value")
        .render_derived()
    )
    return select(query.where(column == wanted.c.value).limit(1).lateral()).select_from(wanted)


_LOCKS: dict[tuple[Column[Any], ...], tuple[Select[Any], Select[Any]]] = {}


def _locking(columns: tuple[Column[Any], ...]) -> tuple[Select[Any], Select[Any]]:
    """The locking statement for ``columns`` (the first the id), as SQLite and as PostgreSQL
    take it: built once per set of columns."""
    built = _LOCKS.get(columns)
    if built is None:
        id_column = columns[0]
        by_list = (
            select(*columns)
            .where(id_column.in_(bindparam("ids", expanding=True)))
            .order_by(id_column)
            .with_for_update()
        )
        locked = (
            select(*columns)
            .where(id_column == any_(bindparam("ids", type_=ARRAY(id_column.type))))
            .order_by(id_column)
            .with_for_update()
            .subquery("locked")
        )
        by_array = select(
            *locked.c, func.clock_timestamp(type_=DateTime(timezone=True)).label("locked_at")
        )
        built = _LOCKS[columns] = (by_list, cast(Select[Any], by_array))
    return built


async def lock_in_id_order(
    session: AsyncSession, columns: tuple[Column[Any], ...], ids: Sequence[int]
) -> tuple[Sequence[Any], dt.datetime]:
    """The rows of ``ids`` (``columns[0]`` is the id), locked with ``SELECT ... ORDER BY id FOR
    UPDATE``, and the time once all of them are locked.

    On PostgreSQL the ids go as one array, and each row comes with the database's clock read as
    it leaves the lock (one more column after ``columns``), so the last row's is read once every
    row is locked (the outer query pulls each row through the locking one): one clock for every
    service process and host. SQLite has no row locks (its writers hold the database's write
    lock from ``BEGIN IMMEDIATE``) and takes the process's clock."""
    by_list, by_array = _locking(columns)
    if not is_postgresql(session):
        return (await session.execute(by_list, {"ids": ids})).all(), utcnow()
    rows = (await session.execute(by_array, {"ids": ids})).all()
    return rows, max((row[-1] for row in rows), default=None) or utcnow()


def _unnested(table: Table, columns: Sequence[str]) -> Any:
    """``unnest(:a_x, :a_y, ...) AS v(x, y, ...)``: the columns, each bound as one array."""
    arrays = [bindparam(f"a_{name}", type_=ARRAY(table.c[name].type)) for name in columns]
    return func.unnest(*arrays).table_valued(*columns).render_derived()


def _arrays(columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    return {f"a_{name}": values for name, values in columns.items()}


def _rows(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


# Statements are built once per shape and kept: building a SQLAlchemy statement and computing its
# cache key costs more than executing it, and these run on every posting request.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _insert_arrays(table: Table, columns: tuple[str, ...], constants: tuple[str, ...]) -> Any:
    key = ("insert", table.name, columns, constants)
    statement = _STATEMENTS.get(key)
    if statement is None:
        rows = _unnested(table, columns)
        values = [
            *(rows.c[name] for name in columns),
            *(bindparam(f"c_{name}", type_=table.c[name].type) for name in constants),
        ]
        statement = insert(table).from_select([*columns, *constants], select(*values))
        _STATEMENTS[key] = statement
    return statement


def _update_arrays(table: Table, columns: tuple[str, ...]) -> Any:
    key = ("update", table.name, columns)
    statement = _STATEMENTS.get(key)
    if statement is None:
        rows = _unnested(table, columns)
        statement = (
            update(table)
            .where(table.c.id == rows.c.id)
            .values({name: rows.c[name] for name in columns if name != "id"})
        )
        _STATEMENTS[key] = statement
    return statement


COPY_FROM_ROWS = 64
"""From this many rows, :func:`insert_columns` hands PostgreSQL the rows by ``COPY`` (binary)."""


async def _copy_driver(session: AsyncSession) -> Any:
    """The session's asyncpg connection, if it is inside the session's transaction."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None


async def insert_columns(
    session: AsyncSession,
    table: Table,
    columns: Mapping[str, list[Any]],
    constants: Mapping[str, Any],
) -> None:
    """Insert rows given column by column, with ``constants`` the same in every row.

    On PostgreSQL, a few rows go in one statement (``INSERT ... SELECT * FROM unnest(<one array
    per column>)``), one round trip where an executemany costs one statement each. A batch's
    rows go by binary ``COPY``, in the same transaction (its triggers fire as for an INSERT):
    asyncpg encodes a record's values without the per-element checks it makes of an array's,
    which for a batch's 2 000 postings halved the client's time and cut the server's by a third
    (no ``unnest`` to expand). ``COPY`` takes the values as they are, past SQLAlchemy's bind
    processing; the engine's values are already what the driver sends (UUIDs, ints, bytes,
    text, an aware UTC datetime). SQLite, in process, takes the executemany."""
    if not is_postgresql(session):
        await session.execute(insert(table), [{**row, **constants} for row in _rows(columns)])
        return
    count = len(next(iter(columns.values())))
    if count >= COPY_FROM_ROWS:
        driver = await _copy_driver(session)
        if driver is not None:
            fixed = [repeat(value, count) for value in constants.values()]
            await driver.copy_records_to_table(
                table.name,
                records=list(zip(*columns.values(), *fixed, strict=True)),
                columns=[*columns, *constants],
            )
            return
    statement = _insert_arrays(table, tuple(columns), tuple(constants))
    await session.execute(
        statement,
        {**_arrays(columns), **{f"c_{name}": value for name, value in constants.items()}},
    )


async def update_by_id(
    session: AsyncSession, table: Table, columns: Mapping[str, list[Any]]
) -> None:
    """Set the other ``columns`` of the rows named by the ``id`` column: on PostgreSQL in one
    statement (``UPDATE ... FROM unnest(...)``), on SQLite by an executemany."""
    if not is_postgresql(session):
        values = [name for name in columns if name != "id"]
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in values}),
            [{f"b_{name}": value for name, value in row.items()} for row in _rows(columns)],
        )
        return
    await session.execute(_update_arrays(table, tuple(columns)), _arrays(columns))


async def serialise_on(session: AsyncSession, scope: str) -> None:
    """Queue behind any other transaction that named ``scope``, until it ends: a
    transaction-scoped advisory lock on PostgreSQL. On SQLite every writer holds the database's
    write lock from its first statement (``BEGIN IMMEDIATE``), so there is nothing to take."""
    if is_postgresql(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:scope, 0))"), {"scope": scope}
        )


def refuses_in_savepoint(session: AsyncSession) -> bool:
    """Whether a write that a unique index refuses can be caught, rolled back to a savepoint and
    told apart by the index's name (PostgreSQL, through asyncpg's errors): a batch is then
    posted first as if none of its keys were used. SQLite's batches look their keys up first."""
    return is_postgresql(session)


async def can_read_apart(connection: AsyncConnection) -> bool:
    """Whether other connections see all that ``connection`` sees: PostgreSQL, when its
    transaction has written nothing. Verify then reads on connections of its own, in one
    exported snapshot."""
    if not is_postgresql(connection):
        return False
    return bool(await connection.scalar(text("SELECT pg_current_xact_id_if_assigned() IS NULL")))


def uuid_bytes(connection: AsyncConnection, column: Any) -> Any:
    """``column`` (a UUID) as the server can send it: its 16 bytes on PostgreSQL
    (``uuid_send``), which saves decoding a UUID object per row only to take its bytes; the
    UUID itself on SQLite (the caller takes ``.bytes``)."""
    return func.uuid_send(column) if is_postgresql(connection) else column


async def aggregate_in_memory(connection: AsyncConnection) -> None:
    """Let the transaction's aggregates hash in memory rather than spill (PostgreSQL's
    ``work_mem``, for this transaction only); SQLite has no such setting."""
    if is_postgresql(connection):
        await connection.execute(text("SET LOCAL work_mem = '256MB'"))


async def chunks(
    connection: AsyncConnection, query: Select[Any], size: int
) -> AsyncGenerator[Sequence[Any], None]:
    """The rows of ``query`` in chunks of ``size``, memory flat however many there are.

    On PostgreSQL this reads asyncpg's own server-side cursor and fetches the next chunk while
    the caller works on the current one: verify is bound by decoding rows, and SQLAlchemy's
    async adaptation roughly doubled that cost per row. Elsewhere it streams through
    SQLAlchemy."""
    if not is_postgresql(connection):
        result = await connection.stream(query.execution_options(yield_per=size))
        async for partition in result.partitions():
            yield partition
        return
    # Opens the driver's transaction, which asyncpg's cursors need (on a connection that has
    # not run anything yet).
    await connection.execute(text("SELECT 1"))
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    compiled = query.compile(dialect=connection.dialect)
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    cursor = await raw.cursor(str(compiled), *params)
    pending = asyncio.ensure_future(cursor.fetch(size))
    try:
        while True:
            chunk = await pending
            if not chunk:
                return
            pending = asyncio.ensure_future(cursor.fetch(size))
            yield chunk
    finally:
        # Closed early (the caller failed): let the fetch in flight finish, so that the
        # connection is free for the rollback that follows.
        if not pending.done():
            with contextlib.suppress(Exception):
                await pending


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


async def database_is_live(session: AsyncSession) -> bool:
    """Whether the operator marked this PostgreSQL database live, with
    ``ALTER DATABASE <name> SET exchange.live = 'on'``: then no test shortcut (a business day
    cut early) is allowed. SQLite is the embedded development database, never live."""
    if not is_postgresql(session):
        return False
    value = await session.scalar(text("SELECT current_setting('exchange.live', true)"))
    return (value or "").strip().lower() in {"on", "true", "1", "yes"}


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
