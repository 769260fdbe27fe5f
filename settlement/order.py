"""Which business day settles next: days settle in order, each after the one before, from the
day of the first money posting; a day settles once its cutoff (and the grace after it) is past."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.errors import InvalidInput, SettlementCalendarChanged, SettlementOutOfOrder
from exchange.settings import Settings
from settlement.calendar import BusinessCalendar, Calendar, last_complete_day, parse_cutoff
from settlement.tables import account_t, posting_t
from settlement.views import latest_batch


async def first_money_posting_at(session: AsyncSession, currency: str) -> dt.datetime | None:
    """When the first money posting was made: the earliest of each money account's first
    posting (``seq = 1``), found through the ``(account_id, seq)`` index."""
    value: dt.datetime | None = await session.scalar(
        select(func.min(posting_t.c.created_at))
        .select_from(posting_t.join(account_t, account_t.c.id == posting_t.c.account_id))
        .where(account_t.c.ledger == currency, posting_t.c.seq == 1)
    )
    return value


async def next_date(session: AsyncSession, calendar: Calendar, currency: str) -> dt.date | None:
    """The business date to settle next: the day after the last batch, or the day of the first
    money posting; ``None`` when there has never been one."""
    latest = await latest_batch(session)
    if latest is not None:
        return latest.business_date + dt.timedelta(days=1)  # type: ignore[no-any-return]
    first = await first_money_posting_at(session, currency)
    return None if first is None else calendar.business_date_of(first)


async def check_order(
    session: AsyncSession,
    business_date: dt.date,
    cutoff_at: dt.datetime,
    latest: Row[Any] | None,
    calendar: Calendar,
    currency: str,
    label: str,
) -> None:
    """Refuse to settle ``business_date`` unless it is the next day (:class:`SettlementOutOfOrder`),
    in the currency settled so far (:class:`InvalidInput`), with the calendar the batches before
    were cut with (:class:`SettlementCalendarChanged`); ``latest`` is the last batch."""
    if latest is None:
        first = await first_money_posting_at(session, currency)
        if first is None:
            return
        earliest = calendar.business_date_of(first)
        if first < calendar.cutoff_at(business_date - dt.timedelta(days=1)):
            raise SettlementOutOfOrder(
                f"business date {earliest} has money postings and must settle first",
                next_business_date=earliest.isoformat(),
            )
        if business_date < earliest:
            # A day before the first money posting would be an empty batch that fixes where
            # days start: most likely a run with another calendar than the service's.
            raise SettlementOutOfOrder(
                f"nothing to settle before business date {earliest}, the first with money",
                next_business_date=earliest.isoformat(),
            )
        return
    check_calendar(latest, label)
    if latest.currency != currency:
        raise InvalidInput(
            f"settled so far in {latest.currency}, now configured for {currency}",
            currency=currency,
        )
    expected = latest.business_date + dt.timedelta(days=1)
    if business_date != expected:
        raise SettlementOutOfOrder(
            f"the last settled business date is {latest.business_date}; {expected} is next",
            next_business_date=expected.isoformat(),
        )
    if cutoff_at <= latest.cutoff_at:
        raise SettlementOutOfOrder(
            f"the cutoff of {business_date} ({cutoff_at}) is not after the last batch's"
            f" ({latest.cutoff_at}); business days must move forward",
            next_business_date=expected.isoformat(),
        )


def calendar_label(settings: Settings) -> str:
    """The calendar a batch is cut with, as recorded on it: ``"<zone> <HH:MM:SS>"``."""
    return f"{settings.settlement_timezone} {parse_cutoff(settings.settlement_cutoff).isoformat()}"


def check_calendar(latest: Row[Any], label: str) -> None:
    """Refuse a calendar other than the one the last batch was cut with (early or not)."""
    recorded = latest.calendar
    if recorded is None:
        return
    recorded = recorded.removesuffix(" early")
    if recorded != label:
        raise SettlementCalendarChanged(
            f"the batches so far were cut at {recorded}, this run is configured for {label}:"
            " set EXCHANGE_SETTLEMENT_TIMEZONE and EXCHANGE_SETTLEMENT_CUTOFF as the service has"
            " them",
            recorded=recorded,
            configured=label,
        )


def last_due(calendar: Calendar, settings: Settings, now: dt.datetime) -> dt.date:
    """The last business date that has ended ``settlement_grace_seconds`` before ``now``."""
    return last_complete_day(
        calendar, now - dt.timedelta(seconds=settings.settlement_grace_seconds)
    )


async def due_dates(
    session: AsyncSession,
    *,
    settings: Settings,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
) -> list[dt.date]:
    """The business dates :func:`settlement.runs.settle_due` would settle now, in order."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    last = last_due(calendar, settings, now or utcnow())
    first = await next_date(session, calendar, settings.settlement_currency)
    if first is None or first > last:
        return []
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
