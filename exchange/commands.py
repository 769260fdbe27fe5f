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


def emit_rows(rows: list[dict[str, Any]], *, table: bool, title: str | None = None) -> None:
    """``rows`` as JSON on stdout, or with ``table`` as a human table (rich), a column a key."""
    if not table:
        emit(rows)
        return
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        shown.add_column(column)
    for row in rows:
        shown.add_row(*("" if row.get(c) is None else str(json_default(row[c])) for c in columns))
    Console(width=200).print(shown)


TABLE_OPTION = click.option("--table", "table", is_flag=True, help="A human table instead of JSON.")


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
