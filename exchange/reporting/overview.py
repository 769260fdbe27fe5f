"""The coalition at a glance: points outstanding per brand, daily volumes, conversion flows
between brands and donations per charity.

Points outstanding are read from the ledger's heads at once (a brand's issuance accounts sum to
minus what its members hold); what moved on each day comes from
:mod:`exchange.reporting.figures` (the rollup for closed days, the postings for the others).
Money is in micros of the settlement currency: ``points * micros_per_point`` at the point value
in force now, exact (both are integers, so nothing is rounded).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.reporting import (
    BrandOutstanding,
    CharityDonations,
    ConversionFlow,
    DailyVolume,
    Overview,
)
from exchange.ledger.models import Account
from exchange.pricing.service import values_in_force
from exchange.reporting import figures
from exchange.reporting.days import calendar_or_default
from exchange.reporting.rollup import tune_for_reports
from partners.models import Partner
from settlement.calendar import Calendar

account_t = cast(Table, Account.__table__)
partner_t = cast(Table, Partner.__table__)

# Which volume column each transaction kind's member credits and debits add to.
_CREDITS = {"issue": "issued", "convert": "converted_in", "reverse": "reversed_in"}
_DEBITS = {
    "redeem": "redeemed",
    "capture": "redeemed",
    "convert": "converted_out",
    "donate": "donated",
    "expire": "expired",
    "reverse": "reversed_out",
    "transfer": "transferred",
}
_VOLUME_FIELDS = (
    "issued", "redeemed", "converted_out", "converted_in", "donated", "expired",
    "reversed_in", "reversed_out", "transferred",
)  # fmt: skip


async def settlement_currency(session: AsyncSession) -> str | None:
    """The money ledger's currency: the ledger of the settlement accounts."""
    return cast(
        str | None,
        await session.scalar(
            select(account_t.c.ledger).where(account_t.c.kind == "settlement").limit(1)
        ),
    )


async def outstanding(session: AsyncSession) -> list[BrandOutstanding]:
    """Every brand's points outstanding now, and their value at the point value in force."""
    issuance = (
        select(account_t.c.partner_id, func.sum(account_t.c.balance).label("balance"))
        .where(account_t.c.kind == "issuance")
        .group_by(account_t.c.partner_id)
        .subquery()
    )
    rows = await session.execute(
        select(partner_t.c.id, partner_t.c.name, partner_t.c.currency, issuance.c.balance)
        .outerjoin(issuance, issuance.c.partner_id == partner_t.c.id)
        .where(partner_t.c.kind == "brand")
        .order_by(partner_t.c.currency)
    )
    values = {value.partner_id: value.micros_per_point for value in await values_in_force(session)}
    brands = []
    for row in rows:
        points = -int(row.balance or 0)
        value = values.get(row.id, 0)
        brands.append(
            BrandOutstanding(row.id, row.name, row.currency, points, value, points * value)
        )
    return brands


def _daily(rows: Iterable[Any]) -> list[DailyVolume]:
    totals: dict[tuple[dt.date, uuid.UUID], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(_VOLUME_FIELDS, 0)
    )
    for row in rows:
        day = totals[(row.business_date, row.brand_id)]
        if row.kind in _CREDITS:
            day[_CREDITS[row.kind]] += int(row.points_in)
        if row.kind in _DEBITS:
            day[_DEBITS[row.kind]] += int(row.points_out)
    return [
        DailyVolume(business_date=date, brand_id=brand, **fields)
        for (date, brand), fields in sorted(
            totals.items(), key=lambda item: (item[0][0], str(item[0][1]))
        )
    ]


async def overview(
    session: AsyncSession, *, today: dt.date, days: int = 30, calendar: Calendar | None = None
) -> Overview:
    """Outstanding now; volumes, flows and donations of the ``days`` business dates ending
    ``today`` (included)."""
    calendar = calendar_or_default(calendar)
    await tune_for_reports(session)
    first = today - dt.timedelta(days=max(1, days) - 1)
    names = {row.id: row for row in await session.execute(select(partner_t))}
    flows: dict[tuple[uuid.UUID, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in await figures.flows(session, calendar, first, today):
        cell = flows[(row.from_brand_id, row.to_brand_id)]
        cell[0] += int(row.points_out)
        cell[1] += int(row.points_in)
        cell[2] += int(row.conversions)
    gifts: dict[tuple[uuid.UUID, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in await figures.donations(session, calendar, first, today):
        cell = gifts[(row.charity_id, row.brand_id)]
        cell[0] += int(row.points)
        cell[1] += int(row.value_micros)
        cell[2] += int(row.donations)
    return Overview(
        first_date=first,
        last_date=today,
        settlement_currency=await settlement_currency(session),
        outstanding=await outstanding(session),
        daily=_daily(await figures.volumes(session, calendar, first, today)),
        flows=[
            ConversionFlow(source, names[source].currency, target, names[target].currency, *cell)
            for (source, target), cell in sorted(
                flows.items(),
                key=lambda item: (names[item[0][0]].currency, names[item[0][1]].currency),
            )
        ],
        donations=[
            CharityDonations(charity, names[charity].name, brand, names[brand].currency, *cell)
            for (charity, brand), cell in sorted(
                gifts.items(), key=lambda item: (names[item[0][0]].name, names[item[0][1]].currency)
            )
        ],
    )
