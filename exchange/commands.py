"""What every operator command shares: one committed transaction, JSON out, one-line errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import json_default
from exchange.db import create_engine
from exchange.errors import DomainError
from exchange.migrate import upgrade
from exchange.settings import Settings, get_settings

T = TypeVar("T")


def emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=json_default))


def run_with_session(work: Callable[[AsyncSession, Settings], Awaitable[T]]) -> T:
    """Migrate (unless disabled), then run ``work`` in one committed database transaction."""
    settings = get_settings()
    if settings.auto_migrate:
        upgrade(settings)

    async def main() -> T:
        engine = create_engine(settings)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
                return await work(session, settings)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except DomainError as error:
        click.echo(
            json.dumps({"type": error.slug, "detail": error.detail, **error.extra}), err=True
        )
        sys.exit(1)
