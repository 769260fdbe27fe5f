"""Charts as inline SVG, drawn on the server from the figures the page shows.

Written here, in a few dozen lines, rather than taken from a library: the console sends no
script at all (its Content-Security-Policy allows none), so a JavaScript chart library is out
whatever it ships; the Python ones either draw raster images (matplotlib: a large dependency
for a few lines and bars) or expect their script from a CDN for tooltips (pygal). An SVG of
lines and bars is a handful of elements, scales with the page (``viewBox``), prints, and keeps
every label escaped. Axis labels are rounded for reading; the exact figures are in the tables
beside each chart, and in each point's ``<title>``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = (
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
    "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c",
)  # fmt: skip


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _short(value: int) -> str:
    """An axis label: ``1 200 000`` reads ``1.2M`` (rounded, for the eye only)."""
    size = abs(value)
    for limit, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if size >= limit:
            tenths = size * 10 // limit
            text = f"{tenths // 10}" + (f".{tenths % 10}" if tenths % 10 else "")
            return ("-" if value < 0 else "") + text + suffix
    return str(value)


def _ticks(low: int, high: int, count: int = 4) -> list[int]:
    """Gridlines at a step of 1, 2 or 5 times a power of ten, about ``count`` of them."""
    span, magnitude = max(high - low, 1), 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if step * count >= span:
                first = (low // step) * step
                return list(range(first, high + step, step))
        magnitude *= 10


def line_chart(
    labels: Sequence[str], series: Sequence[Series], *, title: str, width: int = 640,
    height: int = 220,
) -> Markup:  # fmt: skip
    """Lines over evenly spaced ``labels`` (dates), one per series, with a legend."""
    left, right, top, bottom = 48, 12, 30, 28
    values = [v for s in series for v in s.values] or [0]
    ticks = _ticks(min(0, *values), max(1, *values))
    low, high = ticks[0], ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: int) -> float:
        return top + plot_h - plot_h * (v - low) / max(high - low, 1)

    parts = [_open(width, height, title)]
    for tick in ticks:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(tick):.1f}"'
            f' y2="{y(tick):.1f}"/><text class="axis" x="{left - 6}" y="{y(tick) + 4:.1f}"'
            f' text-anchor="end">{_short(tick)}</text>'
        )
    for i in sorted({0, n // 2, n - 1}):
        if i < len(labels):
            parts.append(
                f'<text class="axis" x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">'
                f"{escape(labels[i])}</text>"
            )
    for index, one in enumerate(series):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(one.values))
        parts.append(
            f'<polyline fill="none" stroke="{colour(index)}" stroke-width="2" points="{points}">'
            f"<title>{escape(one.name)}</title></polyline>"
        )
        for i, v in enumerate(one.values):
            if v and i < len(labels):
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour(index)}">'
                    f"<title>{escape(one.name)} {escape(labels[i])}: {v:,}</title></circle>"
                )
    parts.append(_legend([s.name for s in series], left))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, int]], *, title: str, width: int = 640, unit: str = ""
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, longest first as given."""
    row, left, right, top = 26, 150, 90, 8
    height = top * 2 + row * max(len(bars), 1)
    most = max([abs(v) for _, v in bars] or [1]) or 1
    plot_w = width - left - right
    parts = [_open(width, height, title)]
    for index, (label, value) in enumerate(bars):
        y = top + index * row
        length = plot_w * abs(value) / most
        parts.append(
            f'<text class="label" x="{left - 8}" y="{y + 17}" text-anchor="end">'
            f"{escape(label[:22])}</text>"
            f'<rect x="{left}" y="{y + 4}" width="{max(length, 1):.1f}" height="{row - 8}"'
            f' rx="3" fill="{colour(index)}"><title>{escape(label)}: {value:,} {escape(unit)}'
            f"</title></rect>"
            f'<text class="value" x="{left + length + 6:.1f}" y="{y + 17}">{_short(value)}'
            f" {escape(unit)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )


def _legend(names: Sequence[str], left: int) -> str:
    parts, x = [], left
    for index, name in enumerate(names):
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" rx="2" fill="{colour(index)}"/>'
            f'<text class="legend" x="{x + 16}" y="17">{escape(name)}</text>'
        )
        x += 26 + 8 * len(name)
    return "".join(parts)
