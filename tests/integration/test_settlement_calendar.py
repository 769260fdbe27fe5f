"""Settlement made plain (issue 16): a settled day answers its batch whatever the time and the
settings; a run with another cutoff or zone than the batches before it is refused; a day before
the first money posting is not quietly settled empty; a test day can be cut early from the CLI,
but not on a PostgreSQL database marked live."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import SettlementCalendarChanged, SettlementOutOfOrder
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from settlement.calendar import BusinessCalendar
from settlement.runs import settle_day
from tests.conftest import make_partner
from tests.integration.operator_cli import litestar
from tests.integration.settlement_support import convert

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def converted(
    sessions: Sessions, settings: Settings, sky: PartnerInfo, htl: PartnerInfo
) -> dt.date:
    """Sky Air owes Hotel Co 59 400 000 micros and the operator 1 200 000, today."""
    operator = await make_partner(sessions, settings, "operator", "Coalition")
    await convert(sessions, sky, htl, operator, 59_400_000, 1_200_000)
    return BusinessCalendar.from_settings(settings).business_date_of(utcnow())


def _cli(settings: Settings, *args: str, **env: str) -> tuple[int, object]:
    done = litestar(settings, "settlement", *args, env=env)
    printed = done.stdout if done.returncode == 0 else done.stderr.strip().splitlines()[-1]
    return done.returncode, json.loads(printed)


async def test_a_test_day_settles_early_and_answers_its_batch_ever_after(
    settings: Settings, converted: dt.date
) -> None:
    today = converted.isoformat()
    code, refused = _cli(settings, "run", "--date", today)
    assert code == 1 and isinstance(refused, dict)
    assert refused["type"] == "settlement-not-due" and "--cutoff-now" in refused["detail"]
    assert refused["cutoff_at"].endswith("Z")

    code, batch = _cli(settings, "run", "--date", today, "--cutoff-now")
    assert code == 0 and isinstance(batch, dict), batch
    assert batch["business_date"] == today and batch["postings"] == 3
    assert sorted(p["net_micros"] for p in batch["positions"]) == [
        -60_600_000,
        1_200_000,
        59_400_000,
    ]

    # The same day again, with other settings: its batch, not "not due" (issue 16).
    code, again = _cli(settings, "run", "--date", today, EXCHANGE_SETTLEMENT_CUTOFF="17:00")
    assert code == 0 and isinstance(again, dict)
    assert again["id"] == batch["id"]

    code, listed = _cli(settings, "list")
    assert code == 0 and isinstance(listed, list)
    assert [(b["business_date"], b["status"]) for b in listed] == [(today, "complete")]
    table = litestar(settings, "settlement", "list", "--table")
    assert table.returncode == 0 and today in table.stdout


async def test_another_cutoff_or_zone_than_the_batches_before_is_refused(
    sessions: Sessions, settings: Settings, converted: dt.date
) -> None:
    keys = load_exchange_keys(settings)
    later = utcnow() + dt.timedelta(days=3)
    await settle_day(sessions, converted, settings=settings, keys=keys, now=later)
    tomorrow = converted + dt.timedelta(days=1)
    for changed in (
        dataclasses.replace(settings, settlement_cutoff="17:00"),
        dataclasses.replace(settings, settlement_timezone="Europe/Berlin"),
    ):
        with pytest.raises(SettlementCalendarChanged) as refused:
            await settle_day(sessions, tomorrow, settings=changed, keys=keys, now=later)
        assert refused.value.extra["recorded"] == "UTC 00:00:00"
    batch = await settle_day(sessions, tomorrow, settings=settings, keys=keys, now=later)
    assert batch.business_date == tomorrow


async def test_a_day_before_the_first_money_is_not_settled_empty(
    sessions: Sessions, settings: Settings, converted: dt.date
) -> None:
    keys = load_exchange_keys(settings)
    with pytest.raises(SettlementOutOfOrder) as refused:
        await settle_day(sessions, converted - dt.timedelta(days=5), settings=settings, keys=keys)
    assert refused.value.extra["next_business_date"] == converted.isoformat()


@pytest.mark.postgres_only
async def test_a_live_database_refuses_an_early_cutoff(
    sessions: Sessions, settings: Settings, converted: dt.date
) -> None:
    async with sessions() as session:
        name = await session.scalar(text("SELECT current_database()"))
        await session.execute(text(f"ALTER DATABASE \"{name}\" SET exchange.live = 'on'"))
        await session.commit()
    code, refused = _cli(settings, "run", "--date", converted.isoformat(), "--cutoff-now")
    assert code == 1 and isinstance(refused, dict)
    assert refused["type"] == "early-cutoff-refused"
