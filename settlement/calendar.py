"""Business days: which money postings a day's settlement takes, in pure date arithmetic.

A business day ends at its *cutoff*: the configured wall-clock time in the configured zone.
Business date ``D`` ends at the first moment after the start of calendar day ``D`` (local) at
which the clock shows the cutoff time; so with the default ``00:00`` it ends at the midnight that
closes ``D`` (24:00), and with ``17:00`` at 17:00 on ``D`` (a posting at 18:00 belongs to
``D + 1``, the banks' convention). Business date ``D`` covers ``[cutoff(D - 1), cutoff(D))``.

Time zones with daylight saving: a cutoff time that does not exist on a day (inside the spring
gap) falls as many minutes after the gap as it would have been into it (``02:30`` in Berlin on
the last Sunday of March is 03:30 CEST); a time that occurs twice (autumn) is its first
occurrence. Either way cutoffs strictly increase, so the days tile time with no gap and no
overlap, and a day may last 23 or 25 hours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from exchange.settings import Settings

_MIDNIGHT = dt.time(0, 0)


class Calendar(Protocol):
    """What settlement needs to know about business days."""

    def cutoff_at(self, business_date: dt.date) -> dt.datetime:
        """The UTC instant business date ``business_date`` ends (exclusive)."""
        ...

    def business_date_of(self, instant: dt.datetime) -> dt.date:
        """The business date whose ``[cutoff(D - 1), cutoff(D))`` contains ``instant``."""
        ...


def parse_cutoff(value: str) -> dt.time:
    """``HH:MM`` or ``HH:MM:SS`` (24-hour clock) as a time of day."""
    try:
        parsed = dt.time.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"a cutoff is HH:MM or HH:MM:SS, not {value!r}") from None
    if parsed.tzinfo is not None or parsed.microsecond:
        raise ValueError(f"a cutoff is HH:MM or HH:MM:SS, not {value!r}")
    return parsed


@dataclass(frozen=True)
class BusinessCalendar:
    """Business days of a zone and a cutoff time (see the module's note)."""

    zone: ZoneInfo
    cutoff: dt.time

    @classmethod
    def from_settings(cls, settings: Settings) -> BusinessCalendar:
        return cls(ZoneInfo(settings.settlement_timezone), parse_cutoff(settings.settlement_cutoff))

    def cutoff_at(self, business_date: dt.date) -> dt.datetime:
        day = business_date + dt.timedelta(days=1) if self.cutoff == _MIDNIGHT else business_date
        # fold=0: in an autumn overlap the first occurrence; in a spring gap the offset from
        # before the gap, which lands the instant just as far past the gap.
        local = dt.datetime.combine(day, self.cutoff, tzinfo=self.zone)
        return local.astimezone(dt.UTC)

    def business_date_of(self, instant: dt.datetime) -> dt.date:
        if instant.tzinfo is None:
            raise ValueError("naive datetime")
        local_date = instant.astimezone(self.zone).date()
        # The answer is the local date or the day after it (the day before, at most, around a
        # gap); checking a small window keeps this obviously right in every zone.
        for offset in (-1, 0, 1, 2):
            candidate = local_date + dt.timedelta(days=offset)
            if (
                self.cutoff_at(candidate - dt.timedelta(days=1))
                <= instant
                < self.cutoff_at(candidate)
            ):
                return candidate
        raise AssertionError(f"no business date contains {instant}")  # pragma: no cover


def last_complete_day(calendar: Calendar, now: dt.datetime) -> dt.date:
    """The latest business date whose cutoff is at or before ``now``."""
    return calendar.business_date_of(now) - dt.timedelta(days=1)
