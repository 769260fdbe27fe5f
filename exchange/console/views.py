"""Shaping the query layer's answers for the pages: rows grouped by brand, days with nothing
as zeros, charts' series. No figure is computed here: every number shown is one that
:mod:`exchange.reporting` (or a feature's service) answered, placed where a page shows it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from exchange.console.charts import Series, bar_chart, line_chart
from exchange.contract.reporting import DailyPosition, DailyVolume, Overview
from exchange.contract.schemas import PointValueOut

VOLUME_SERIES = (
    ("issued", "issue"),
    ("redeemed", "redeem"),
    ("converted_out", "convert"),
    ("donated", "donate"),
)
"""The four volumes of a brand's chart: the field of :class:`DailyVolume`, and its name."""


def date_labels(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class BrandVolumes:
    brand_id: uuid.UUID
    name: str
    currency: str
    today: DailyVolume | None
    chart: Markup


def brand_volumes(overview: Overview) -> list[BrandVolumes]:
    """Per brand of the overview: its row of the last day, and its chart of every day."""
    days = date_labels(overview.first_date, overview.last_date)
    by_brand: dict[uuid.UUID, dict[dt.date, DailyVolume]] = {}
    for row in overview.daily:
        by_brand.setdefault(row.brand_id, {})[row.business_date] = row
    shaped = []
    for brand in overview.outstanding:
        rows = by_brand.get(brand.brand_id, {})
        series = [
            Series(label, [getattr(rows[d], field) if d in rows else 0 for d in days])
            for field, label in VOLUME_SERIES
        ]
        chart = line_chart(
            [d.isoformat()[5:] for d in days],
            series,
            title=f"{brand.name} ({brand.currency}): points per day",
        )
        shaped.append(
            BrandVolumes(
                brand.brand_id, brand.name, brand.currency, rows.get(overview.last_date), chart
            )
        )
    return shaped


def flow_matrix(
    overview: Overview,
) -> tuple[list[str], dict[tuple[str, str], tuple[int, int, int]]]:
    """The currencies that appear in a flow, and each flow by (from, to) currency."""
    cells = {
        (f.from_currency, f.to_currency): (f.points_out, f.points_in, f.conversions)
        for f in overview.flows
    }
    currencies = sorted({c for pair in cells for c in pair})
    return currencies, cells


def outstanding_chart(overview: Overview, currency: str) -> Markup:
    bars = [(f"{b.name} ({b.currency})", b.value_micros // 1_000_000) for b in overview.outstanding]
    return bar_chart(bars, title="Points outstanding, in money", unit=currency)


def donations_chart(overview: Overview, currency: str) -> Markup:
    bars = [
        (f"{d.charity_name} from {d.currency}", d.value_micros // 1_000_000)
        for d in overview.donations
    ]
    return bar_chart(bars, title="Donations per charity, in money", unit=currency)


def positions_chart(positions: Sequence[DailyPosition], currency: str) -> Markup:
    """Each participant's settled net position per business date (zero on a date without one)."""
    dates = sorted({p.business_date for p in positions})
    names = sorted({p.name for p in positions})
    nets = {(p.name, p.business_date): p.net_micros // 1_000_000 for p in positions}
    series = [Series(name, [nets.get((name, d), 0) for d in dates]) for name in names]
    return line_chart(
        [d.isoformat() for d in dates],
        series,
        title=f"Net positions by business date ({currency}, whole units)",
    )


def point_value_chart(values: Sequence[PointValueOut]) -> Markup:
    """Each brand's point value in micros from one version's date to the next (the value in
    force at each date a version took effect; before its first, none, drawn as 0)."""
    dates = sorted({v.effective_at for v in values})
    brands = sorted({v.currency for v in values})
    series = []
    for currency in brands:
        versions = sorted(
            (v for v in values if v.currency == currency), key=lambda v: v.effective_at
        )
        line, current, upcoming = [], 0, list(versions)
        for moment in dates:
            while upcoming and upcoming[0].effective_at <= moment:
                current = upcoming.pop(0).micros_per_point
            line.append(current)
        series.append(Series(currency, line))
    return line_chart(
        [d.date().isoformat() for d in dates], series, title="Point values (micros per point)"
    )
