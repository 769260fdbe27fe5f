"""Database engines for PostgreSQL (asyncpg) and the embedded SQLite default (aiosqlite)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from exchange.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Hand the transaction boundaries to us (pysqlite would otherwise open them lazily and
    # as DEFERRED), and make every transaction BEGIN IMMEDIATE below: SQLite has no row
    # locks, so a writer must take the database write lock up front or two read-then-write
    # transactions could both read a balance before either writes it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def prepare_sqlite_file(settings: Settings) -> None:
    """Create the data directory ``0700`` and the SQLite database file ``0600`` before SQLite
    would create it under the process umask (``0644`` as a rule): balances, keys' ciphertexts
    and nonces are nobody else's to read. SQLite gives its ``-wal`` and ``-shm`` files the
    database file's permissions. Existing files are left as they are."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = make_url(settings.sqlalchemy_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """An async engine for the configured database, with SQLite made safe for concurrent writers."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        prepare_sqlite_file(settings)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, **kwargs)


def session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
