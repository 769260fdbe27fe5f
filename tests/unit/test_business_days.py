"""Business days: cutoffs in a zone, across daylight saving, tile time with no gap or overlap."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.settings import Settings
from settlement.calendar import BusinessCalendar, last_complete_day, parse_cutoff
from settlement.scheduler import seconds_until_settlement

PROPERTY = settings(max_examples=500, deadline=None, derandomize=True, database=None)
UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def calendar(zone: str = "UTC", cutoff: str = "00:00") -> BusinessCalendar:
    return BusinessCalendar(ZoneInfo(zone), parse_cutoff(cutoff))


def test_default_is_the_utc_calendar_day() -> None:
    days = BusinessCalendar.from_settings(Settings())
    assert days.cutoff_at(dt.date(2026, 11, 20)) == at(2026, 11, 21)
    assert days.business_date_of(at(2026, 11, 20)) == dt.date(2026, 11, 20)
    assert days.business_date_of(at(2026, 11, 20, 23, 59, 59, 999_999)) == dt.date(2026, 11, 20)
    assert days.business_date_of(at(2026, 11, 21)) == dt.date(2026, 11, 21)
    assert last_complete_day(days, at(2026, 11, 21, 0, 0, 1)) == dt.date(2026, 11, 20)
    assert last_complete_day(days, at(2026, 11, 20, 23, 59)) == dt.date(2026, 11, 19)


def test_an_afternoon_cutoff_ends_the_day_that_afternoon() -> None:
    days = calendar("Europe/Berlin", "17:00")
    assert days.cutoff_at(dt.date(2026, 11, 20)) == at(2026, 11, 20, 16)  # CET, UTC+1
    assert days.cutoff_at(dt.date(2026, 7, 1)) == at(2026, 7, 1, 15)  # CEST, UTC+2
    assert days.business_date_of(at(2026, 11, 20, 15, 59)) == dt.date(2026, 11, 20)
    assert days.business_date_of(at(2026, 11, 20, 16)) == dt.date(2026, 11, 21)


def test_a_cutoff_in_the_spring_gap_falls_just_as_far_past_it() -> None:
    # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    days = calendar("Europe/Berlin", "02:30")
    before, gap, after = (days.cutoff_at(dt.date(2026, 3, d)) for d in (28, 29, 30))
    assert (before, gap, after) == (
        at(2026, 3, 28, 1, 30),
        at(2026, 3, 29, 1, 30),
        at(2026, 3, 30, 0, 30),
    )
    assert gap.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") == "03:30 CEST"
    assert (gap - before, after - gap) == (dt.timedelta(hours=24), dt.timedelta(hours=23))


def test_a_cutoff_in_the_autumn_overlap_is_its_first_occurrence() -> None:
    # Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    days = calendar("Europe/Berlin", "02:30")
    before, twice, after = (days.cutoff_at(dt.date(2026, 10, d)) for d in (24, 25, 26))
    assert twice == at(2026, 10, 25, 0, 30)  # 02:30 CEST, the first one
    assert (twice - before, after - twice) == (dt.timedelta(hours=24), dt.timedelta(hours=25))


def test_midnight_that_does_not_exist() -> None:
    # Santiago, 6 September 2026: 00:00 -04 jumps to 01:00 -03; the day that ends then is 23 h.
    days = calendar("America/Santiago", "00:00")
    end = days.cutoff_at(dt.date(2026, 9, 5))
    assert end == at(2026, 9, 6, 4)
    assert days.cutoff_at(dt.date(2026, 9, 6)) - end == dt.timedelta(hours=23)


@pytest.mark.parametrize("value", ["24:00", "7pm", "12:00+01:00", "10:00:00.5", "", "25:00"])
def test_bad_cutoffs_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_cutoff(value)


def test_parse_cutoff() -> None:
    assert parse_cutoff("17:30") == dt.time(17, 30)
    assert parse_cutoff(" 00:00:05 ") == dt.time(0, 0, 5)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe",
         "Asia/Kolkata", "Pacific/Chatham", "America/St_Johns"]  # fmt: skip


@PROPERTY
@given(
    zone=st.sampled_from(ZONES),
    cutoff=st.times().map(lambda t: t.replace(microsecond=0)),
    day=st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31)),
    into=st.integers(0, 30 * 3600 * 10**6),
)
def test_days_tile_time(zone: str, cutoff: dt.time, day: dt.date, into: int) -> None:
    days = BusinessCalendar(ZoneInfo(zone), cutoff)
    start, end = days.cutoff_at(day - dt.timedelta(days=1)), days.cutoff_at(day)
    assert dt.timedelta(hours=22) <= end - start <= dt.timedelta(hours=26)
    assert days.business_date_of(start) == day
    assert days.business_date_of(end - dt.timedelta(microseconds=1)) == day
    assert days.business_date_of(end) == day + dt.timedelta(days=1)
    instant = start + dt.timedelta(microseconds=into)
    found = days.business_date_of(instant)
    assert days.cutoff_at(found - dt.timedelta(days=1)) <= instant < days.cutoff_at(found)


def test_the_scheduler_wakes_at_the_cutoff_plus_grace_or_to_poll() -> None:
    base = replace(Settings(), settlement_grace_seconds=5, settlement_poll_seconds=60)
    days = calendar()
    assert seconds_until_settlement(days, base, at(2026, 11, 20, 23, 59, 30)) == 35.0
    assert seconds_until_settlement(days, base, at(2026, 11, 20, 12)) == 60.0
    assert seconds_until_settlement(days, base, at(2026, 11, 21, 0, 0, 3)) == 2.0
