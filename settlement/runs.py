"""Nightly settlement: a business day's money postings become one batch, netted and signed.

Design note
-----------
* What a day takes: per money account, one range of its chain, up to its last posting before
  the cutoff that had committed when the batch was taken (:mod:`settlement.ranges`).
* Who owes whom: one aggregate per (account, counterparty) over those ranges
  (:mod:`settlement.pairing`); then nets, carries, payouts and instructions
  (:mod:`settlement.netting`, :mod:`settlement.conclusions`), and a signed statement per
  participant (:mod:`settlement.statements`).
* Exactly once. A day is written by one database transaction (batch, ranges, matrix,
  positions, instructions, statements, ``settlement.ready`` events), so a run that dies
  leaves nothing. Runs take a PostgreSQL advisory lock; the unique ``business_date`` is the
  backstop. Running a settled day again returns its batch. Days settle in order, each after
  the one before (``carry_in`` is the previous batch's ``carry_out``; :mod:`settlement.order`).
* Paying: :func:`settlement.payments.mark_paid`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import rfc3339, utcnow
from exchange.dialect import (
    database_is_live,
    refresh_statistics,
    take_settlement_lock,
    tune_settlement_transaction,
)
from exchange.errors import EarlyCutoffRefused, SettlementNotDue
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from exchange.transparency.scheduler import checkpoint_now
from settlement.calendar import BusinessCalendar, Calendar
from settlement.conclusions import (
    DayHeader,
    announce,
    book_day,
    carry_in,
    day_facts,
    participants,
    write_obligations,
    write_positions,
)
from settlement.donations import donation_stats
from settlement.order import calendar_label, check_order, last_due, next_date
from settlement.pairing import Day, pair_day
from settlement.ranges import take_ranges
from settlement.statements import issue_statements
from settlement.tables import batch_t
from settlement.views import BatchView, batch_row, batch_view, latest_batch

SETTLEMENT_LOCK_ID = 7_420_004
"""The PostgreSQL advisory lock every settlement run holds (any fixed number)."""

STEPS = ("ranges", "obligations", "positions", "statements")
"""What :func:`settle_day` reports to ``on_step`` as it finishes each part of a day."""

OnStep = Callable[[dt.date, str], None]


async def settle_day(
    session_factory: async_sessionmaker[AsyncSession],
    business_date: dt.date,
    *,
    settings: Settings,
    keys: ExchangeKeys,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
    on_step: OnStep | None = None,
    cutoff_now: bool = False,
) -> BatchView:
    """Settle one business day, in one database transaction, and return its batch; a day
    already settled returns the batch it has, whatever the time and the settings. Refuses a day
    whose cutoff has not passed (:class:`SettlementNotDue`) and a day out of order
    (:class:`SettlementOutOfOrder`).

    ``cutoff_now`` cuts the current business day at ``now`` instead of its cutoff, to settle a
    test day early (:func:`check_early`: refused on a PostgreSQL database marked live)."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    now = now or utcnow()
    async with session_factory() as session:
        existing = await batch_row(session, business_date)
        if existing is not None:
            return await batch_view(session, existing)
    early = None
    if cutoff_now and calendar.cutoff_at(business_date) > now:
        async with session_factory() as session:
            await check_early(session, calendar, business_date, now)
        early = now
    elif calendar.cutoff_at(business_date) > now:
        raise SettlementNotDue(
            f"business date {business_date} ends at {rfc3339(calendar.cutoff_at(business_date))};"
            " to settle a test day before then, add --cutoff-now",
            business_date=business_date.isoformat(),
            cutoff_at=rfc3339(calendar.cutoff_at(business_date)),
        )
    async with session_factory() as session, session.begin():
        await take_settlement_lock(session, SETTLEMENT_LOCK_ID, wait=True)
        return await _settle_locked(
            session, business_date, calendar=calendar, settings=settings, keys=keys,
            on_step=on_step, early=early,
        )  # fmt: skip


async def check_early(
    session: AsyncSession, calendar: Calendar, business_date: dt.date, now: dt.datetime
) -> None:
    """Only the current business day may be cut early, and never on a PostgreSQL database
    marked live (``ALTER DATABASE ... SET exchange.live = 'on'``)."""
    if await database_is_live(session):
        raise EarlyCutoffRefused(
            "this database is marked live (exchange.live = on): days settle at their cutoff",
            business_date=business_date.isoformat(),
        )
    current = calendar.business_date_of(now)
    if business_date != current:
        raise EarlyCutoffRefused(
            f"only the current business day ({current}) can be cut early",
            business_date=business_date.isoformat(),
        )


async def settle_due(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    settings: Settings,
    keys: ExchangeKeys,
    calendar: Calendar | None = None,
    now: dt.datetime | None = None,
    wait: bool = False,
    on_step: OnStep | None = None,
) -> list[BatchView]:
    """Settle every business day that has ended (``settlement_grace_seconds`` ago) and is not
    settled yet, oldest first, each in its own transaction, so that a failure keeps the days
    before it. With ``wait=False`` (the scheduler) a run that finds another replica settling
    gives up at once and leaves the work to it; ``wait=True`` (the CLI) queues behind it."""
    calendar = calendar or BusinessCalendar.from_settings(settings)
    last = last_due(calendar, settings, now or utcnow())
    settled: list[BatchView] = []
    while True:
        async with session_factory() as session, session.begin():
            if not await take_settlement_lock(session, SETTLEMENT_LOCK_ID, wait=wait):
                break
            business_date = await next_date(session, calendar, settings.settlement_currency)
            if business_date is None or business_date > last:
                break
            settled.append(
                await _settle_locked(
                    session,
                    business_date,
                    calendar=calendar,
                    settings=settings,
                    keys=keys,
                    on_step=on_step,
                )
            )
    if settled:
        # The log is checkpointed at every cutoff too, once the days are settled.
        async with session_factory() as session, session.begin():
            await checkpoint_now(session, settings, keys, "cutoff")
    return settled


async def _settle_locked(
    session: AsyncSession,
    business_date: dt.date,
    *,
    calendar: Calendar,
    settings: Settings,
    keys: ExchangeKeys,
    on_step: OnStep | None,
    early: dt.datetime | None = None,
) -> BatchView:
    """Settle one day inside the caller's transaction, which holds the settlement lock; with
    ``early``, cut at that moment rather than at the day's cutoff."""
    existing = await batch_row(session, business_date)
    if existing is not None:
        return await batch_view(session, existing)
    currency = settings.settlement_currency
    cutoff_at = calendar.cutoff_at(business_date) if early is None else early
    latest = await latest_batch(session)
    label = calendar_label(settings)
    await check_order(session, business_date, cutoff_at, latest, calendar, currency, label)

    def step(name: str) -> None:
        if on_step is not None:
            on_step(business_date, name)

    await tune_settlement_transaction(session, settings.settlement_work_mem)
    now = utcnow()
    label = label if early is None else f"{label} early"
    header = await _open_batch(session, business_date, cutoff_at, settings, now, label)
    ranges = await take_ranges(session, header.batch_id, currency, cutoff_at)
    await refresh_statistics(session, "settlement_range")
    step("ranges")

    day = await pair_day(session, header.batch_id, currency) if ranges else Day({}, 0)
    obligations = await write_obligations(session, header.batch_id, day.matrix)
    step("obligations")

    book = book_day(obligations, await carry_in(session, latest), header.minor_exponent)
    await write_positions(session, header.batch_id, book)
    step("positions")

    donations = await donation_stats(session, header.batch_id, currency)
    facts = day_facts(header, book, await participants(session, book), donations)
    hashes = await issue_statements(session, facts, keys)
    await announce(session, header, book, hashes, now)
    await session.execute(
        update(batch_t)
        .where(batch_t.c.id == header.batch_id)
        .values(status="complete", postings=day.postings, completed_at=utcnow())
    )
    step("statements")
    row = await batch_row(session, business_date)
    assert row is not None
    return await batch_view(session, row)


async def _open_batch(
    session: AsyncSession,
    business_date: dt.date,
    cutoff_at: dt.datetime,
    settings: Settings,
    now: dt.datetime,
    label: str,
) -> DayHeader:
    """Write the day's batch, ``open`` until the end of the run's transaction."""
    batch_id = await session.scalar(
        insert(batch_t)
        .values(
            business_date=business_date,
            cutoff_at=cutoff_at,
            calendar=label,
            status="open",
            currency=settings.settlement_currency,
            minor_exponent=settings.settlement_minor_exponent,
            postings=0,
            created_at=now,
        )
        .returning(batch_t.c.id)
    )
    assert batch_id is not None
    return DayHeader(
        batch_id,
        business_date,
        cutoff_at,
        settings.settlement_currency,
        settings.settlement_minor_exponent,
    )
