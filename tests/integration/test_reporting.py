"""The operator's reports over a small known world, worked by hand.

Sky Air (SKY, 12 000 micros a point) and Hotel Co (HTL, 8 000); SKY to HTL at 1 000 : 750 with
a 1 % fee; Clean Water, a charity. Four business days of 2026, each made of what the API does
between two cutoffs (the calendar is scripted: a story day ends when the test says so):

- 10 January: Sky issues alice 1 000 and bob 500.
- 5 February: Sky issues alice 2 000 and carol 4 000.
- 1 March: alice redeems 600; Sky issues bob 300 and reverses 100 of bob's first 500; carol
  converts 2 000 SKY into HTL (fee 20, out floor(1 980 * 750 / 1 000) = 1 485).
- 20 April: carol donates 1 000 SKY to Clean Water (12 000 000 micros); Sky issues dave 800 and
  alice 100; alice redeems 400.

Sky's programme from 1 February to 20 April: active in the 30 days to 20 April (from 22 March)
alice, carol, dave = 3; in the 90 days (from 21 January) and in the period all four; earned
2 000 + 4 000 + 300 + 800 + 100 = 7 200; burned 600 + 400 = 1 000; redemption rate
1 000 / 7 200 = 1 388.8 bp, 1 388; repeat earners (two or more months with an earn): alice
(February, April) of four earners, 2 500 bp; 7 200 // 4 = 1 800 points per active member; no
expiry, breakage 0. Cohorts by first earn: January alice and bob, 1 of 2 active lately, earned
3 100 + 800 = 3 900 (bob's reversal is not an earn undone: earned counts issues), 1 950 a member,
1 950 * 12 000 = 23 400 000 micros; February carol, 4 000, 48 000 000; April dave, 800,
9 600 000. Outstanding: SKY alice 2 100, bob 700, carol 1 000, dave 800 = 4 600 (55 200 000
micros), HTL carol 1 485 (11 880 000).
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.contract.reporting import (
    BrandOutstanding,
    CharityDonations,
    Cohort,
    ConversionFlow,
    DailyVolume,
    ProgrammeMetrics,
    Ratio,
)
from exchange.ledger.models import Account
from exchange.ledger.parties import PartnerInfo
from exchange.reporting import service
from exchange.reporting.rollup import close_due_days
from tests.integration.conftest import Partners, SignedApi
from tests.integration.pricing_support import balance, enrol, set_rate, set_value
from tests.integration.settlement_support import cutoff_now

D1, D2, D3, D4 = (
    dt.date(2026, 1, 10),
    dt.date(2026, 2, 5),
    dt.date(2026, 3, 1),
    dt.date(2026, 4, 20),
)
ROLLUP_TABLES = (
    "reporting_day", "reporting_volume", "reporting_flow", "reporting_donation",
    "reporting_member_day", "reporting_member", "reporting_cohort_day",
)  # fmt: skip


@dataclass
class ScriptedCalendar:
    """Business days whose cutoffs the test records as it goes: story date ``d`` ends at the
    instant recorded for it; the dates between two story dates last a microsecond each, those
    before the first and after the last a day each."""

    story: list[tuple[dt.date, dt.datetime]] = field(default_factory=list)

    def end(self, date: dt.date, at: dt.datetime) -> None:
        self.story.append((date, at))

    def cutoff_at(self, business_date: dt.date) -> dt.datetime:
        dates = [date for date, _ in self.story]
        i = bisect.bisect_right(dates, business_date) - 1
        if i < 0:
            first, cutoff = self.story[0]
            return cutoff - dt.timedelta(days=(first - business_date).days)
        date, cutoff = self.story[i]
        unit = dt.timedelta(days=1) if i == len(self.story) - 1 else dt.timedelta(microseconds=1)
        return cutoff + (business_date - date).days * unit

    def business_date_of(self, instant: dt.datetime) -> dt.date:
        low, high = -10_000, 10_000  # offsets from the first story date
        first = self.story[0][0]
        while low < high:
            middle = (low + high) // 2
            if self.cutoff_at(first + dt.timedelta(days=middle)) > instant:
                high = middle
            else:
                low = middle + 1
        return first + dt.timedelta(days=low)


@dataclass(frozen=True)
class World:
    calendar: ScriptedCalendar
    charity_id: uuid.UUID


async def _post(api: SignedApi, path: str, body: dict[str, Any], as_: Any) -> dict[str, Any]:
    answer = await api.post(path, body, as_=as_)
    assert answer.status_code == 201, answer.text
    posted: dict[str, Any] = answer.json()
    return posted


@pytest.fixture
async def world(api: SignedApi, partners: Partners) -> World:
    """The module's four days, through the signed API."""
    sky, htl, operator = partners.sky, partners.htl, partners.operator
    charity = await _post(api, "/v1/partners", {"kind": "charity", "name": "Clean Water"}, operator)
    await set_value(api, operator, "SKY", 12_000)
    await set_value(api, operator, "HTL", 8_000)
    await set_rate(
        api, operator, from_currency="SKY", to_currency="HTL",
        from_points=1_000, to_points=750, fee_bps=100, min_points=500,
    )  # fmt: skip
    for ref in ("alice", "bob", "carol", "dave"):
        await enrol(api, sky, ref)
    await enrol(api, htl, "carol")
    calendar = ScriptedCalendar()

    async def issue(ref: str, points: int) -> dict[str, Any]:
        return await _post(api, "/v1/issuances", {"member_ref": ref, "points": points}, sky)

    async def redeem(ref: str, points: int) -> None:
        await _post(api, "/v1/redemptions", {"member_ref": ref, "points": points}, sky)

    await issue("alice", 1_000)
    bobs_first = await issue("bob", 500)
    calendar.end(D1, await cutoff_now())
    await issue("alice", 2_000)
    await issue("carol", 4_000)
    calendar.end(D2, await cutoff_now())
    await redeem("alice", 600)
    await issue("bob", 300)
    await _post(
        api, f"/v1/transactions/{bobs_first['transaction']['id']}/reversal", {"points": 100}, sky
    )
    conversion = {"member_ref": "carol", "to_partner": "HTL", "to_member_ref": "carol"}
    await _post(api, "/v1/conversions", {**conversion, "points": 2_000}, sky)
    calendar.end(D3, await cutoff_now())
    donation = {"member_ref": "carol", "charity": charity["id"], "points": 1_000}
    await _post(api, "/v1/donations", donation, sky)
    await issue("dave", 800)
    await issue("alice", 100)
    await redeem("alice", 400)
    calendar.end(D4, await cutoff_now())
    return World(calendar, uuid.UUID(charity["id"]))


def _sky_metrics(sky: PartnerInfo) -> ProgrammeMetrics:
    """The module's worked example, by hand."""
    return ProgrammeMetrics(
        brand_id=sky.id, currency="SKY", start=dt.date(2026, 2, 1), end=D4,
        active_30_days=3, active_90_days=4, active_in_period=4,
        earned=7_200, burned=1_000, redemption_rate=Ratio(1_000, 7_200, 1_388),
        breakage=0, repeat_earn_rate=Ratio(1, 4, 2_500), average_points_per_active_member=1_800,
        cohorts=[
            Cohort(dt.date(2026, 1, 1), 2, 1, Ratio(1, 2, 5_000), 1_950, 23_400_000),
            Cohort(dt.date(2026, 2, 1), 1, 1, Ratio(1, 1, 10_000), 4_000, 48_000_000),
            Cohort(dt.date(2026, 4, 1), 1, 1, Ratio(1, 1, 10_000), 800, 9_600_000),
        ],
    )  # fmt: skip


async def _metrics(
    sessions: async_sessionmaker[AsyncSession], world: World, brand: PartnerInfo
) -> ProgrammeMetrics:
    async with sessions() as session:
        return await service.programme_metrics(
            session, brand.id, start=dt.date(2026, 2, 1), end=D4, calendar=world.calendar
        )


async def test_each_programme_metric_is_the_worked_example_live_half_rolled_up_and_rolled_up(
    sessions: async_sessionmaker[AsyncSession], world: World, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    expected = _sky_metrics(sky)
    assert await _metrics(sessions, world, sky) == expected  # every day read from its postings

    halfway = world.calendar.cutoff_at(D2)
    closed = await close_due_days(sessions, world.calendar, now=halfway)
    assert closed[0] == D1 and closed[-1] == D2
    assert await _metrics(sessions, world, sky) == expected  # D1, D2 stored; D3, D4 live

    closed = await close_due_days(sessions, world.calendar)
    assert closed[-1] == D4
    assert await _metrics(sessions, world, sky) == expected  # every day stored

    hotel = await _metrics(sessions, world, htl)
    # Carol's 1 485 HTL came by conversion: activity, not an earn.
    assert (hotel.active_30_days, hotel.active_90_days, hotel.earned, hotel.cohorts) == (
        0,
        1,
        0,
        [],
    )


async def _overview(sessions: async_sessionmaker[AsyncSession], world: World) -> Any:
    async with sessions() as session:
        return await service.overview(session, today=D4, days=120, calendar=world.calendar)


async def test_the_overview_says_what_the_api_and_the_ledger_say(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    world: World,
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> None:
    seen = await _overview(sessions, world)
    members = {"alice": 2_100, "bob": 700, "carol": 1_000, "dave": 800}
    for ref, points in members.items():
        assert await balance(api, partners.sky, ref) == points
    assert await balance(api, partners.htl, "carol") == 1_485
    assert seen.outstanding == [
        BrandOutstanding(htl.id, "Hotel Co", "HTL", 1_485, 8_000, 11_880_000),
        BrandOutstanding(sky.id, "Sky Air", "SKY", 4_600, 12_000, 55_200_000),
    ]
    assert seen.settlement_currency == "EUR"
    assert (seen.first_date, seen.last_date) == (D4 - dt.timedelta(days=119), D4)
    assert seen.flows == [ConversionFlow(sky.id, "SKY", htl.id, "HTL", 2_000, 1_485, 1)]
    assert seen.donations == [
        CharityDonations(world.charity_id, "Clean Water", sky.id, "SKY", 1_000, 12_000_000, 1)
    ]
    zero = dict.fromkeys(
        ("issued", "redeemed", "converted_out", "converted_in", "donated", "expired",
         "reversed_in", "reversed_out", "transferred"), 0,
    )  # fmt: skip
    assert seen.daily == sorted(
        [
            DailyVolume(D1, sky.id, **{**zero, "issued": 1_500}),
            DailyVolume(D2, sky.id, **{**zero, "issued": 6_000}),
            DailyVolume(D3, htl.id, **{**zero, "converted_in": 1_485}),
            DailyVolume(
                D3,
                sky.id,
                **{
                    **zero,
                    "issued": 300,
                    "redeemed": 600,
                    "converted_out": 2_000,
                    "reversed_out": 100,
                },
            ),
            DailyVolume(D4, sky.id, **{**zero, "issued": 900, "redeemed": 400, "donated": 1_000}),
        ],
        key=lambda day: (day.business_date, str(day.brand_id)),
    )
    # The ledger's side: the charity's settlement accounts (its shards) are owed the donation.
    async with sessions() as session:
        charity_owed = await session.scalar(
            select(func.sum(Account.balance)).where(
                Account.partner_id == world.charity_id, Account.kind == "settlement"
            )
        )
    assert charity_owed == 12_000_000
    # Rolled up, the overview is the same.
    await close_due_days(sessions, world.calendar)
    assert await _overview(sessions, world) == seen


async def _rollup(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[Any]]:
    async with sessions() as session:
        return {
            table: sorted(
                map(tuple, await session.execute(text(f"SELECT * FROM {table}"))), key=str
            )
            for table in ROLLUP_TABLES
        }


async def test_closing_the_days_again_changes_nothing(
    sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    first = await close_due_days(sessions, world.calendar)
    assert first[-1] == D4 and len(first) == (D4 - first[0]).days + 1
    stored = await _rollup(sessions)
    assert len(stored["reporting_member"]) == 4 and len(stored["reporting_flow"]) == 1
    assert await close_due_days(sessions, world.calendar) == []
    assert await _rollup(sessions) == stored
    async with sessions() as session:
        health = await service.ledger_health(session)
    assert health.reporting_closed_through == D4


async def test_the_pricing_history_deliveries_and_positions_are_the_features_own(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    world: World,
) -> None:
    answer = await api.get("/v1/rates", as_=partners.sky)
    assert answer.status_code == 200, answer.text
    in_force = answer.json()
    async with sessions() as session:
        history = await service.rate_history(session)
        deliveries = await service.webhook_deliveries(session)
        positions = await service.settlement_positions_over_time(session)
        with pytest.raises(ValueError, match="delivery state"):
            await service.webhook_deliveries(session, state="lost")
    # One version each so far: the history is what is in force, as the API answers it.
    assert [str(rate.id) for rate in history.rates] == [rate["id"] for rate in in_force["rates"]]
    assert sorted((v.currency, v.micros_per_point) for v in history.point_values) == [
        ("HTL", 8_000),
        ("SKY", 12_000),
    ]
    assert all(d.state == "pending" for d in deliveries)
    assert positions == []  # no day settled yet
