"""Alembic environment: the one source of the schema, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from exchange.db import create_engine
from exchange.models import metadata
from exchange.settings import get_settings

# Any fixed number: the advisory lock several replicas starting at once queue on.
MIGRATION_LOCK_ID = 7_420_001


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.attributes.get("url")
    settings = get_settings()
    if url is not None:
        settings = replace(settings, database_url=url)
    engine = create_engine(settings, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=get_settings().sqlalchemy_url, target_metadata=metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
