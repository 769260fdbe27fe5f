"""The operator's reports (the console's query layer) over a small known world."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.ledger.parties import PartnerInfo
from exchange.reporting import service
from settlement.calendar import BusinessCalendar
from tests.integration.conftest import Partners, SignedApi
from tests.integration.pricing_support import balance, enrol, set_rate, set_value

UTC_DAYS = BusinessCalendar(dt.UTC, dt.time(0, 0))  # type: ignore[arg-type]


async def test_overview_smoke(
    api: SignedApi,
    partners: Partners,
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> None:
    await set_value(api, partners.operator, "SKY", 12_000)
    await set_value(api, partners.operator, "HTL", 8_000)
    await set_rate(
        api, partners.operator, from_currency="SKY", to_currency="HTL",
        from_points=1_000, to_points=750, fee_bps=100, min_points=500,
    )  # fmt: skip
    await enrol(api, partners.sky, "alice", 20_000)
    await enrol(api, partners.htl, "alice")
    body: dict[str, Any] = {
        "member_ref": "alice",
        "to_partner": "HTL",
        "to_member_ref": "alice",
        "points": 10_000,
    }
    assert (await api.post("/v1/conversions", body, as_=partners.sky)).status_code == 201
    today = UTC_DAYS.business_date_of(utcnow())
    async with sessions() as session:
        seen = await service.overview(session, today=today, calendar=UTC_DAYS)
        metrics = await service.programme_metrics(
            session, sky.id, start=today, end=today, calendar=UTC_DAYS
        )
        await service.ledger_health(session)
        await service.rate_history(session)
    outstanding = {b.currency: b.points for b in seen.outstanding}
    assert outstanding == {
        "SKY": await balance(api, partners.sky, "alice"),
        "HTL": await balance(api, partners.htl, "alice"),
    }
    assert [(f.points_out, f.points_in, f.conversions) for f in seen.flows] == [(10_000, 7_425, 1)]
    assert metrics.earned == 20_000 and metrics.active_30_days == 1
