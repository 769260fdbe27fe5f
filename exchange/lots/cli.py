"""Operator commands: ``litestar lots expire | liability | set-policy | policies``.

Each prints JSON on stdout; refusals print a JSON problem on stderr and exit 1."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import click
import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import json_default
from exchange.commands import emit, run_with_session
from exchange.settings import Settings, get_settings

_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _moment(
    _ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> dt.datetime | None:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param=param) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _plain(value: msgspec.Struct) -> Any:
    return msgspec.to_builtins(value, enc_hook=json_default)


@click.group(name="lots", help="Points' expiry: policies, expiry runs, liability and breakage.")
def lots_group() -> None:
    pass


@lots_group.command(name="expire", help="Expire every lot due by a business day's cutoff.")
@click.option("--date", "day", type=_DATE, default=None, help="YYYY-MM-DD; default the last ended.")
def expire_command(day: dt.datetime | None) -> None:
    from exchange.db import create_engine, session_maker
    from exchange.lots.service import run_expiry
    from exchange.migrate import upgrade

    settings = get_settings()
    if settings.auto_migrate:
        upgrade(settings)

    async def main() -> Any:
        engine = create_engine(settings)
        try:
            sessions = session_maker(engine)
            return await run_expiry(sessions, settings, None if day is None else day.date())
        finally:
            await engine.dispose()

    emit(_plain(asyncio.run(main())))


@lots_group.command(name="liability", help="A brand's points outstanding, their value, breakage.")
@click.option("--currency", required=True, help="The brand's points currency, e.g. SKY.")
@click.option("--at", default=None, callback=_moment, help="ISO 8601; default now.")
@click.option("--from", "from_at", default=None, callback=_moment, help="Breakage from (ISO 8601).")
@click.option("--to", "to_at", default=None, callback=_moment, help="Breakage to (ISO 8601).")
def liability_command(
    currency: str, at: dt.datetime | None, from_at: dt.datetime | None, to_at: dt.datetime | None
) -> None:
    from exchange.lots.service import liability
    from exchange.pricing.service import brand_by_currency

    async def work(session: AsyncSession, settings: Settings) -> Any:
        brand = await brand_by_currency(session, currency.upper())
        report = await liability(
            session, brand, settings.settlement_currency, at=at, from_at=from_at, to_at=to_at
        )
        return _plain(report)

    emit(run_with_session(work))


@lots_group.command(name="set-policy", help="A new version of a brand's expiry policy.")
@click.option("--currency", required=True, help="The brand's points currency, e.g. SKY.")
@click.option(
    "--kind", type=click.Choice(["never", "months", "quarters", "activity"]), required=True
)
@click.option("--period", type=int, default=None, help="Months or quarters (not for never).")
@click.option("--effective-at", default=None, callback=_moment, help="ISO 8601; default now.")
def set_policy_command(
    currency: str, kind: str, period: int | None, effective_at: dt.datetime | None
) -> None:
    from exchange.lots.service import set_expiry_policy
    from exchange.pricing.service import brand_by_currency

    async def work(session: AsyncSession, _settings: Settings) -> Any:
        brand = await brand_by_currency(session, currency.upper())
        return _plain(await set_expiry_policy(session, brand, kind, period, effective_at))

    emit(run_with_session(work))
