"""The coalition at a glance, from :func:`exchange.reporting.overview`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.console import views
from exchange.console.pages.common import calendar, page
from exchange.reporting.service import overview
from exchange.settings import Settings

DAYS = 30


class OverviewController(Controller):
    path = "/"
    include_in_schema = False

    @get("/")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template:
        days = calendar(settings)
        today = days.business_date_of(utcnow())
        report = await overview(db_session, today=today, days=DAYS, calendar=days)
        currency = report.settlement_currency or settings.settlement_currency
        currencies, cells = views.flow_matrix(report)
        return page(
            request,
            "overview",
            report=report,
            currency=currency,
            exponent=settings.settlement_minor_exponent,
            brands=views.brand_volumes(report),
            flow_currencies=currencies,
            flows=cells,
            outstanding_chart=views.outstanding_chart(report, currency),
            donations_chart=views.donations_chart(report, currency),
        )
