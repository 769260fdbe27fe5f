"""Point values and rates: effective dating, versions that supersede, quotes that hold a rate
through a change, refusals, the immutability the database enforces, and the operator's CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.conversions import service as conversions
from exchange.errors import (
    DomainError,
    EffectiveInPast,
    InvalidInput,
    PointValueNotFound,
    QuoteExpired,
    QuoteUsed,
    RateNotFound,
    SameBrand,
    UnknownCurrency,
    VersionConflict,
)
from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.operations import issue
from exchange.ledger.parties import PartnerInfo
from exchange.pricing import quotes
from exchange.pricing import service as rates
from exchange.settings import Settings, get_settings
from tests.conftest import make_partner

Sessions = async_sessionmaker[AsyncSession]
HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


async def test_the_version_in_force_is_the_latest_that_has_taken_effect(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        v1 = await rates.set_point_value(s, "SKY", 12_000, at=now)
        v2 = await rates.set_point_value(s, "SKY", 15_000, effective_at=now + HOUR, at=now)
        r1 = await rates.set_rate(
            s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100, at=now
        )
        r2 = await rates.set_rate(
            s, "SKY", "HTL", from_points=1_000, to_points=800, fee_bps=50, min_points=10,
            effective_at=now + 2 * HOUR, at=now,
        )  # fmt: skip
        await rates.set_rate(s, "HTL", "SKY", from_points=4, to_points=3, fee_bps=0, at=now)
    assert (v1.effective_at, v1.currency) == (now, "SKY")

    async with sessions() as s:
        with pytest.raises(PointValueNotFound):
            await rates.value_in_force(s, sky, now - SECOND)
        assert (await rates.value_in_force(s, sky, now)).id == v1.id
        assert (await rates.value_in_force(s, sky, now + HOUR - SECOND)).id == v1.id
        assert (await rates.value_in_force(s, sky, now + HOUR)).id == v2.id
        assert (await rates.value_in_force(s, sky)).micros_per_point == 12_000
        with pytest.raises(PointValueNotFound):
            await rates.value_in_force(s, htl, now + HOUR)

        with pytest.raises(RateNotFound) as refused:
            await rates.rate_in_force(s, sky, htl, now - SECOND)
        assert (refused.value.slug, refused.value.status) == ("rate-not-found", 422)
        assert (await rates.rate_in_force(s, sky, htl, now + HOUR)).id == r1.id
        in_force = await rates.rate_in_force(s, sky, htl, now + 2 * HOUR)
        assert in_force == r2
        assert (in_force.from_currency, in_force.to_currency, in_force.to_points) == (
            "SKY", "HTL", 800,
        )  # fmt: skip

        listed = await rates.rates_in_force(s, now + 3 * HOUR)
        assert [(r.from_currency, r.to_currency, r.id) for r in listed] == [
            ("HTL", "SKY", listed[0].id),
            ("SKY", "HTL", r2.id),
        ]
        assert [r.id for r in await rates.rates_in_force(s, now)] == [listed[0].id, r1.id]
        assert await rates.rates_in_force(s, now - SECOND) == []
        values = await rates.values_in_force(s, now + HOUR)
        assert [(v.currency, v.micros_per_point) for v in values] == [("SKY", 15_000)]


async def test_a_rate_change_applies_from_its_moment_and_a_quote_holds_the_old_rate(
    sessions: Sessions, settings: Settings, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    await make_partner(sessions, settings, "operator", "Coalition")
    now = utcnow()
    change = now + HOUR  # T
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000, at=now)
        await rates.set_point_value(s, "HTL", 8_000, at=now)
        old = await rates.set_rate(
            s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100, at=now
        )
        new = await rates.set_rate(
            s, "SKY", "HTL", from_points=1_000, to_points=800, fee_bps=100,
            effective_at=change, at=now,
        )  # fmt: skip
        await rates.set_point_value(s, "SKY", 15_000, effective_at=change, at=now)
        for brand in (sky, htl):
            await enrol_member(s, brand, "alice")
        await issue(s, sky, "alice", 100_000)

    async def convert(at: dt.datetime, **kwargs: Any) -> conversions.Conversion:
        async with sessions() as s, s.begin():
            return await conversions.post_conversion(s, sky, "alice", "HTL", "alice", 10_000, at=at,
                                               **kwargs)  # fmt: skip

    before = await convert(change - SECOND)
    after = await convert(change)
    assert (before.rate_version_id, before.out, before.operator_fee_micros) == (
        old.id, 7_425, 1_200_000,
    )  # fmt: skip
    assert (after.rate_version_id, after.out, after.operator_fee_micros) == (
        new.id, 7_920, 1_500_000,
    )  # fmt: skip

    # Quotes taken 30 s before T, for 60 s.
    async with sessions() as s, s.begin():
        held = await quotes.create_quote(
            s, sky, "alice", "HTL", "alice", 10_000, 60, at=change - 30 * SECOND
        )
        late = await quotes.create_quote(
            s, sky, "alice", "HTL", "alice", 10_000, 60, at=change - 30 * SECOND
        )
    assert (held.rate_version_id, held.out, held.source_value_micros) == (old.id, 7_425, 12_000)
    quoted = await convert(change + 10 * SECOND, quote_id=held.id)
    assert (quoted.rate_version_id, quoted.out, quoted.operator_fee_micros) == (
        old.id, 7_425, 1_200_000,
    )  # fmt: skip
    async with sessions() as s:
        recorded = await s.scalar(
            select(LedgerTransaction.__table__.c.rate_version_id).where(
                LedgerTransaction.__table__.c.id == quoted.transaction_id
            )
        )
    assert recorded == old.id

    with pytest.raises(QuoteExpired):
        await convert(late.expires_at, quote_id=late.id)
    with pytest.raises(QuoteUsed):
        await convert(change + 20 * SECOND, quote_id=held.id)
    # The late quote stays unspent: still expired, not used.
    with pytest.raises(QuoteExpired):
        await convert(late.expires_at + HOUR, quote_id=late.id)


@pytest.mark.parametrize(
    ("case", "error", "slug"),
    [
        ("value in the past", EffectiveInPast, "effective-in-past"),
        ("rate in the past", EffectiveInPast, "effective-in-past"),
        ("value twice at one moment", VersionConflict, "version-conflict"),
        ("rate twice at one moment", VersionConflict, "version-conflict"),
        ("value of zero", InvalidInput, "invalid-input"),
        ("value over one unit", InvalidInput, "invalid-input"),
        ("fee over 100%", InvalidInput, "invalid-input"),
        ("from_points of zero", InvalidInput, "invalid-input"),
        ("negative minimum", InvalidInput, "invalid-input"),
        ("rate to the same brand", SameBrand, "same-brand"),
        ("rate to an unknown currency", UnknownCurrency, "unknown-currency"),
        ("value of an unknown currency", UnknownCurrency, "unknown-currency"),
    ],
)
async def test_setting_refusals(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    case: str,
    error: type[DomainError],
    slug: str,
) -> None:
    now = utcnow()
    later = now + HOUR
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000, effective_at=later, at=now)
        await rates.set_rate(
            s, "SKY", "HTL", from_points=1, to_points=1, fee_bps=0, effective_at=later, at=now
        )
    rate = {"from_points": 1_000, "to_points": 750, "fee_bps": 100}
    attempts: dict[str, Any] = {
        "value in the past": lambda s: rates.set_point_value(
            s, "SKY", 1, effective_at=now - SECOND, at=now
        ),
        "rate in the past": lambda s: rates.set_rate(
            s, "SKY", "HTL", **rate, effective_at=now - SECOND, at=now
        ),
        "value twice at one moment": lambda s: rates.set_point_value(
            s, "SKY", 1, effective_at=later, at=now
        ),
        "rate twice at one moment": lambda s: rates.set_rate(
            s, "SKY", "HTL", **rate, effective_at=later, at=now
        ),
        "value of zero": lambda s: rates.set_point_value(s, "SKY", 0),
        "value over one unit": lambda s: rates.set_point_value(s, "SKY", 1_000_001),
        "fee over 100%": lambda s: rates.set_rate(s, "SKY", "HTL", **{**rate, "fee_bps": 10_001}),
        "from_points of zero": lambda s: rates.set_rate(
            s, "SKY", "HTL", **{**rate, "from_points": 0}
        ),
        "negative minimum": lambda s: rates.set_rate(s, "SKY", "HTL", **rate, min_points=-1),
        "rate to the same brand": lambda s: rates.set_rate(s, "SKY", "SKY", **rate),
        "rate to an unknown currency": lambda s: rates.set_rate(s, "SKY", "XXX", **rate),
        "value of an unknown currency": lambda s: rates.set_point_value(s, "XXX", 1),
    }
    with pytest.raises(error) as refused:
        async with sessions() as s, s.begin():
            await attempts[case](s)
    assert refused.value.slug == slug
    async with sessions() as s:
        assert len(await rates.rates_in_force(s, later)) == 1
        assert (await rates.value_in_force(s, sky, later)).micros_per_point == 12_000


async def test_a_version_conflict_leaves_the_transaction_usable(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000, at=now)
        with pytest.raises(VersionConflict):
            await rates.set_point_value(s, "SKY", 13_000, effective_at=now, at=now)
        await rates.set_point_value(s, "SKY", 14_000, effective_at=now + SECOND, at=now)
    async with sessions() as s:
        assert (await rates.value_in_force(s, sky, now + SECOND)).micros_per_point == 14_000


async def test_the_database_keeps_versions_and_spent_quotes_as_they_are(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        await rates.set_rate(s, "SKY", "HTL", from_points=1, to_points=1, fee_bps=0)
        await enrol_member(s, sky, "alice")
        await enrol_member(s, htl, "alice")
        await quotes.create_quote(s, sky, "alice", "HTL", "alice", 10)
        await s.execute(text("UPDATE quote SET used_at = created_at"))  # the one change allowed
    for statement in (
        "UPDATE point_value SET micros_per_point = 1",
        "DELETE FROM point_value",
        "UPDATE rate_version SET fee_bps = 0",
        "DELETE FROM rate_version",
        "UPDATE quote SET points = 1",
        "UPDATE quote SET used_at = expires_at",  # a second spend
    ):
        with pytest.raises(DBAPIError, match=r"immutable|spent once"):
            async with sessions() as s, s.begin():
                await s.execute(text(statement))


# --- the operator's CLI -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EXCHANGE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# Importing Litestar's CLI plugin protocol imports advanced-alchemy, which trips a deprecation
# warning of SQLAlchemy 2.1 at import time.
@pytest.mark.filterwarnings("ignore:The declarative_mixin decorator:DeprecationWarning")
def test_operator_sets_and_lists_rates_from_the_command_line(cli_env: None) -> None:
    from exchange.cli import partners_group
    from exchange.pricing.cli import rates_group

    runner = CliRunner()
    for name, currency in (("Sky Air", "SKY"), ("Hotel Co", "HTL")):
        created = runner.invoke(
            partners_group, ["create", "--kind", "brand", "--name", name, "--currency", currency]
        )
        assert created.exit_code == 0, created.output
    value = runner.invoke(rates_group, ["set-value", "--partner-currency", "SKY", "--micros",
                                        "12000"])  # fmt: skip
    assert value.exit_code == 0, value.output
    assert json.loads(value.output)["micros_per_point"] == 12_000
    runner.invoke(rates_group, ["set-value", "--partner-currency", "HTL", "--micros", "8000"])
    rate_args = ["set-rate", "--from", "SKY", "--to", "HTL", "--from-points", "1000",
                 "--to-points", "750", "--fee-bps", "100", "--min-points", "0"]  # fmt: skip
    rate = runner.invoke(rates_group, rate_args)
    assert rate.exit_code == 0, rate.output
    assert json.loads(rate.output)["to_points"] == 750
    future = runner.invoke(
        rates_group,
        [*rate_args[:8], "800", *rate_args[9:], "--effective-at", "2999-01-01T00:00:00"],
    )
    assert json.loads(future.output)["effective_at"] == "2999-01-01T00:00:00Z"

    listed = json.loads(runner.invoke(rates_group, ["list"]).output)
    assert [v["currency"] for v in listed["point_values"]] == ["HTL", "SKY"]
    assert [(r["from_currency"], r["to_points"]) for r in listed["rates"]] == [("SKY", 750)]
    later = json.loads(runner.invoke(rates_group, ["list", "--at", "2999-06-01"]).output)
    assert [r["to_points"] for r in later["rates"]] == [800]

    refused = runner.invoke(rates_group, ["set-value", "--partner-currency", "XXX", "--micros",
                                          "1"])  # fmt: skip
    assert refused.exit_code == 1
    assert json.loads(refused.stderr)["type"] == "unknown-currency"
