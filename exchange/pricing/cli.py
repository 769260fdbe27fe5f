"""Operator commands for pricing: ``litestar rates set-value | set-rate | list``.

Each prints JSON on stdout; refusals print a JSON problem on stderr and exit 1."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339
from exchange.commands import TABLE_OPTION, emit, emit_rows, run_with_session
from exchange.settings import Settings


def _as_dict(view: msgspec.Struct) -> dict[str, Any]:
    return {
        key: rfc3339(value) if isinstance(value, dt.datetime) else value
        for key, value in msgspec.structs.asdict(view).items()
    }


def parse_moment(
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


@click.group(name="rates", help="Set point values and exchange rates; list those in force.")
def rates_group() -> None:
    pass


@rates_group.command(name="set-value", help="A brand's point value in settlement micros.")
@click.option("--partner-currency", required=True, help="The brand's points currency, e.g. SKY.")
@click.option("--micros", type=int, required=True, help="Micros per point (12000 = 1.2 cents).")
@click.option("--effective-at", default=None, callback=parse_moment, help="ISO 8601; default now.")
def set_value_command(partner_currency: str, micros: int, effective_at: dt.datetime | None) -> None:
    from exchange.pricing.service import set_point_value

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        view = await set_point_value(
            session, partner_currency.upper(), micros, effective_at=effective_at
        )
        return _as_dict(view)

    emit(run_with_session(work))


@rates_group.command(name="set-rate", help="A new rate version for an ordered pair of brands.")
@click.option("--from", "from_currency", required=True, help="Source points currency.")
@click.option("--to", "to_currency", required=True, help="Destination points currency.")
@click.option("--from-points", type=int, required=True)
@click.option("--to-points", type=int, required=True, help="Given per --from-points.")
@click.option("--fee-bps", type=int, required=True, help="0 to 10000.")
@click.option("--min-points", type=int, default=0, show_default=True)
@click.option("--effective-at", default=None, callback=parse_moment, help="ISO 8601; default now.")
def set_rate_command(
    from_currency: str,
    to_currency: str,
    from_points: int,
    to_points: int,
    fee_bps: int,
    min_points: int,
    effective_at: dt.datetime | None,
) -> None:
    from exchange.pricing.service import set_rate

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        view = await set_rate(
            session,
            from_currency.upper(),
            to_currency.upper(),
            from_points=from_points,
            to_points=to_points,
            fee_bps=fee_bps,
            min_points=min_points,
            effective_at=effective_at,
        )
        return _as_dict(view)

    emit(run_with_session(work))


@rates_group.command(name="list", help="Point values and rates in force.")
@click.option("--at", default=None, callback=parse_moment, help="ISO 8601; default now.")
@click.option("--from", "from_currency", default=None, help="Only rates from this currency.")
@click.option("--to", "to_currency", default=None, help="Only rates to this currency.")
@click.option("--currency", default=None, help="Only this brand's value and its rates.")
@TABLE_OPTION
def list_command(
    at: dt.datetime | None,
    from_currency: str | None,
    to_currency: str | None,
    currency: str | None,
    table: bool,
) -> None:
    from exchange.pricing.service import rates_in_force, values_in_force

    def wanted(row: dict[str, Any], *keys: tuple[str, str | None]) -> bool:
        return all(want is None or row.get(key) == want.upper() for key, want in keys)

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        values = [_as_dict(view) for view in await values_in_force(session, at)]
        rates = [_as_dict(view) for view in await rates_in_force(session, at)]
        return {
            "point_values": [v for v in values if wanted(v, ("currency", currency))],
            "rates": [
                r
                for r in rates
                if wanted(r, ("from_currency", from_currency), ("to_currency", to_currency))
                and (currency is None or currency.upper() in (r["from_currency"], r["to_currency"]))
            ],
        }

    found = run_with_session(work)
    if table:
        emit_rows(found["point_values"], table=True, title="point values")
        emit_rows(found["rates"], table=True, title="rates")
    else:
        emit(found)
