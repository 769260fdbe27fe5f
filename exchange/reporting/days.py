"""Business days as the reports count them, and where each day's figures are read from.

A report covers business dates of the settlement calendar (``settlement.calendar``). A day the
rollup has closed is read from the rollup tables; any other day (today, or a day not yet closed)
is read live from its postings, bounded by its cutoffs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from exchange.settings import get_settings
from settlement.calendar import BusinessCalendar, Calendar


def calendar_or_default(calendar: Calendar | None) -> Calendar:
    """The calendar given, or the configured settlement calendar."""
    return calendar if calendar is not None else BusinessCalendar.from_settings(get_settings())


@dataclass(frozen=True)
class Day:
    """Business date ``date`` covers ``[start, end)``."""

    date: dt.date
    start: dt.datetime
    end: dt.datetime


def day_of(calendar: Calendar, date: dt.date) -> Day:
    return Day(date, calendar.cutoff_at(date - dt.timedelta(days=1)), calendar.cutoff_at(date))


def dates(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    """``first`` .. ``last``, both included."""
    for offset in range((last - first).days + 1):
        yield first + dt.timedelta(days=offset)


def month_of(date: dt.date) -> dt.date:
    return date.replace(day=1)
