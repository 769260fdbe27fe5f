"""Programme metrics of one brand over a span of business dates, from
:func:`exchange.reporting.programme_metrics` (definitions in the README)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.console.pages.common import calendar, page
from exchange.reporting.service import programme_metrics
from exchange.settings import Settings
from partners.service import list_partners

DEFAULT_DAYS = 30

Query = Annotated[str | None, QueryParameter()]


def _day(value: str | None, default: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(value) if value else default
    except ValueError:
        return default


class MetricsController(Controller):
    path = "/"
    include_in_schema = False

    @get("/metrics")
    async def metrics(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        brand: Query = None,
        start: Query = None,
        end: Query = None,
    ) -> Template:
        days = calendar(settings)
        brands = [p for p in await list_partners(db_session) if p.kind == "brand"]
        chosen = next((b for b in brands if b.currency == (brand or "").upper()), None)
        chosen = chosen or (brands[0] if brands else None)
        last = _day(end, days.business_date_of(utcnow()))
        first = min(_day(start, last - dt.timedelta(days=DEFAULT_DAYS - 1)), last)
        found = (
            await programme_metrics(db_session, chosen.id, start=first, end=last, calendar=days)
            if chosen
            else None
        )
        return page(
            request, "metrics", brands=brands, chosen=chosen, metrics=found, start=first, end=last
        )
