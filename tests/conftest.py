"""Fixtures shared by every test: a real database of each kind, the app, partners.

Every test that asks for ``db_kind`` (directly or through ``settings``, ``session``, ``app``...)
runs twice: on SQLite and on PostgreSQL (``EXCHANGE_TEST_POSTGRES_URL``, default the local
``test`` database). Each test gets a fresh database made from a template that the Alembic
migrations built once, so triggers and constraints are the migrations' own.
Tests marked ``postgres_only`` run on PostgreSQL alone. When PostgreSQL cannot be reached its
half is skipped, unless ``EXCHANGE_TEST_REQUIRE_POSTGRES=1`` (CI), where that is an error.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.db import create_engine
from exchange.ledger.parties import PartnerInfo
from exchange.migrate import upgrade
from exchange.settings import Settings, get_settings
from partners.service import create_partner

POSTGRES_URL = os.environ.get(
    "EXCHANGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("EXCHANGE_TEST_REQUIRE_POSTGRES") == "1"
_counter = itertools.count()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" in metafunc.fixturenames:
        kinds = (
            ["postgresql"]
            if metafunc.definition.get_closest_marker("postgres_only")
            else [
                "sqlite",
                "postgresql",
            ]
        )
        metafunc.parametrize("db_kind", kinds, scope="function")


def _admin_url(database: str) -> str:
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _postgres_available() -> bool:
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
    return True


def base_settings(tmp: Path, database_url: str | None) -> Settings:
    return replace(
        get_settings(),
        data_dir=tmp,
        database_url=database_url,
        auto_migrate=False,
        signing_key=None,
        verify_keys=(),
        master_key=None,
        issuance_shards=4,
        settlement_currency="EUR",
        settlement_minor_exponent=2,
        scheduler=False,  # tests settle when they choose; test_settlement starts it itself
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sqlite-template")
    upgrade(base_settings(directory, None))
    return directory / "exchange.sqlite3"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str | None]:
    if not _postgres_available():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable at {POSTGRES_URL}")
        yield None
        return
    name = f"exchange_template_{os.getpid()}"
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    upgrade(base_settings(Path("/nonexistent"), _admin_url(name)))
    yield name
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(
    db_kind: str,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_template: str | None,
) -> Iterator[str | None]:
    """A fresh, migrated database for one test; ``None`` means the SQLite default in tmp_path."""
    if db_kind == "sqlite":
        shutil.copy(sqlite_template, tmp_path / "exchange.sqlite3")
        yield None
        return
    if postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")
    name = f"exchange_t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    yield _admin_url(name)
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def settings(database_url: str | None, tmp_path: Path) -> Settings:
    return base_settings(tmp_path, database_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def make_partner(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    kind: str,
    name: str,
    currency: str | None = None,
    min_donation_points: int | None = None,
) -> PartnerInfo:
    async with sessions() as session, session.begin():
        return await create_partner(
            session,
            kind=kind,
            name=name,
            currency=currency,
            settlement_currency=settings.settlement_currency,
            shards=settings.issuance_shards,
            min_donation_points=min_donation_points,
        )


@pytest.fixture
async def sky(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> PartnerInfo:
    """An airline brand whose points currency is SKY."""
    return await make_partner(sessions, settings, "brand", "Sky Air", "SKY")


@pytest.fixture
async def htl(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> PartnerInfo:
    """A hotel brand whose points currency is HTL."""
    return await make_partner(sessions, settings, "brand", "Hotel Co", "HTL")
