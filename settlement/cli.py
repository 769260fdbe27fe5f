"""Operator commands: ``litestar settlement run|show|mark-paid``.

Each prints JSON on stdout (``run``: the batches it settled, or the one ``--date`` names); a
progress bar goes to stderr; refusals print a JSON problem on stderr and exit 1, as every
operator command does (``exchange.cli``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.commands import TABLE_OPTION, emit, emit_rows, run_with_session
from exchange.db import create_engine, session_maker
from exchange.errors import DomainError
from exchange.migrate import upgrade
from exchange.settings import Settings, get_settings
from exchange.signing import load_exchange_keys
from settlement.order import due_dates
from settlement.payments import mark_paid
from settlement.runs import STEPS, settle_day, settle_due
from settlement.views import BatchView, get_batch

_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _refuse(error: DomainError) -> None:
    click.echo(json.dumps({"type": error.slug, "detail": error.detail, **error.extra}), err=True)
    sys.exit(1)


@click.group(name="settlement", help="Run, inspect and mark paid the nightly settlement.")
def settlement_group() -> None:
    pass


@settlement_group.command(
    name="run", help="Settle every business day that has ended, oldest first (or one --date)."
)
@click.option("--date", "day", type=_DATE, default=None, help="One business date, YYYY-MM-DD.")
@click.option(
    "--cutoff-now",
    is_flag=True,
    help="With --date D, the current business day: cut it now instead of at its cutoff, to"
    " settle a test day early (refused on a PostgreSQL database marked live).",
)
def run_command(day: dt.datetime | None, cutoff_now: bool) -> None:
    settings = get_settings()
    if cutoff_now and day is None:
        raise click.UsageError("--cutoff-now needs --date (the current business day)")
    if settings.auto_migrate:
        upgrade(settings)
    try:
        batches = asyncio.run(_run(settings, None if day is None else day.date(), cutoff_now))
    except DomainError as error:
        _refuse(error)
        return
    if day is not None:
        emit(batches[0].as_dict())
    else:
        emit([batch.as_dict() for batch in batches])


async def _run(settings: Settings, day: dt.date | None, cutoff_now: bool) -> list[BatchView]:
    keys = load_exchange_keys(settings)
    engine = create_engine(settings)
    sessions = session_maker(engine)
    now = dt.datetime.now(dt.UTC)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    try:
        if day is None:
            async with sessions() as session:
                days = await due_dates(session, settings=settings, now=now)
        else:
            days = [day]
        with progress:
            task = progress.add_task("settlement", total=len(days) * len(STEPS))

            def on_step(business_date: dt.date, step: str) -> None:
                progress.update(task, advance=1, description=f"{business_date} {step}")

            if day is None:
                batches = await settle_due(
                    sessions, settings=settings, keys=keys, now=now, wait=True, on_step=on_step
                )
            else:
                batches = [
                    await settle_day(
                        sessions,
                        day,
                        settings=settings,
                        keys=keys,
                        on_step=on_step,
                        cutoff_now=cutoff_now,
                    )
                ]
            # A day settled before (or by another replica meanwhile) has no steps to report.
            progress.update(task, completed=len(days) * len(STEPS))
    finally:
        await engine.dispose()
    return batches


@settlement_group.command(name="list", help="The latest batches, newest first.")
@click.option("--limit", type=click.IntRange(1, 366), default=30, show_default=True)
@TABLE_OPTION
def list_command(limit: int, table: bool) -> None:
    from settlement.views import list_batches

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [row.as_dict() for row in await list_batches(session, limit=limit)]

    emit_rows(run_with_session(work), table=table, title="settlement batches")


@settlement_group.command(name="show", help="Show a business date's batch.")
@click.argument("day", type=_DATE)
def show_command(day: dt.datetime) -> None:
    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        return (await get_batch(session, day.date())).as_dict()

    emit(run_with_session(work))


@settlement_group.command(
    name="mark-paid",
    help="Record a business date's payments as made; the batch then never changes.",
)
@click.argument("day", type=_DATE)
def mark_paid_command(day: dt.datetime) -> None:
    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        return (await mark_paid(session, day.date())).as_dict()

    emit(run_with_session(work))
