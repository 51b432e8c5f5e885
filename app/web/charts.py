"""Bar and line charts drawn on the server as inline SVG: no chart library, no script, no CDN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

PALETTE = ("#0969da", "#d1242f", "#1a7f37", "#9a6700", "#8250df")
# One colour per meaning on every chart: «Утечки» is the same red wherever it is drawn.
MEANING_COLOURS = {
    "cases": "#2fc6f6",
    "claimed": "#a8adb4",
    "confirmed": "#7bab00",
    "leaks": "#e03b3b",
}
WIDTH, HEIGHT = 720, 300
# Room on the left for the value axis and for the first rotated category label, below for the labels.
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 56, 76


@dataclass(frozen=True)
class Series:
    """A named row of values, one per category."""

    name: str
    values: Sequence[int | Decimal]
    meaning: str = ""

    def colour(self, index: int) -> str:
        """The series' colour: its meaning's (the same on every chart), else the palette's by position."""
        return MEANING_COLOURS.get(self.meaning) or PALETTE[index % len(PALETTE)]


def _scale(series: Sequence[Series]) -> float:
    """The top of the value axis: the largest value rounded up to a readable step."""
    top = max((float(value) for s in series for value in s.values), default=0.0)
    if top <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if top <= step * 5:
            return float(step * 5)
    return top


def _frame(kind: str, title: str, body: list[str], series: Sequence[Series], top: float) -> Markup:
    plot_height = HEIGHT - TOP - BOTTOM
    grid = []
    for index in range(6):
        value = top * index / 5
        y = TOP + plot_height - plot_height * index / 5
        label = f"{value:g}"
        grid.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#d0d7de"/>')
        grid.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(label)}</text>')
    legend = [f'<text class="rc-chart-title" x="{LEFT}" y="20" font-size="15" font-weight="600">{escape(title)}</text>']
    x = LEFT
    for index, item in enumerate(series):
        color = item.colour(index)
        legend.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{color}"/>')
        legend.append(f'<text x="{x + 16}" y="42" font-size="12">{escape(item.name)}</text>')
        x += 28 + 8 * len(item.name)
    # Every text interpolated below went through escape(); the rest are numbers and constants.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rc-chart" data-chart="{kind}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(grid)}{''.join(legend)}{''.join(body)}</svg>"
    )


def _label(text: str, x: float) -> str:
    short = text if len(text) <= 16 else text[:15] + "…"
    y = HEIGHT - BOTTOM + 14
    return (
        f'<text x="{x:.1f}" y="{y}" font-size="11" text-anchor="end" '
        f'transform="rotate(-30 {x:.1f} {y})">{escape(short)}</text>'
    )


def bar_chart(title: str, categories: Sequence[str], series: Sequence[Series]) -> Markup:
    """Grouped bars: one group per category, one bar per series."""
    top = _scale(series)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    group = plot_width / max(len(categories), 1)
    bar = group * 0.8 / max(len(series), 1)
    body = []
    for index, category in enumerate(categories):
        x0 = LEFT + group * index + group * 0.1
        for number, item in enumerate(series):
            value = float(item.values[index])
            height = plot_height * value / top
            x = x0 + bar * number
            y = TOP + plot_height - height
            body.append(
                f'<rect class="rc-bar" x="{x:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" height="{height:.1f}" '
                f'fill="{item.colour(number)}"><title>{escape(category)} — {escape(item.name)}: '
                f"{value:g}</title></rect>"
            )
        body.append(_label(category, x0 + group * 0.4))
    return _frame("bar", title, body, series, top)


def line_chart(title: str, categories: Sequence[str], series: Sequence[Series]) -> Markup:
    """One line per series over the categories (e.g. weeks), with a dot per value."""
    top = _scale(series)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    step = plot_width / max(len(categories) - 1, 1)
    offset = plot_width / 2 if len(categories) == 1 else 0
    body = []
    for number, item in enumerate(series):
        color = item.colour(number)
        points = [
            (LEFT + offset + step * index, TOP + plot_height - plot_height * float(value) / top)
            for index, value in enumerate(item.values)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline class="rc-line" points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for (x, y), value, category in zip(points, item.values, categories, strict=True):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{escape(category)} — '
                f"{escape(item.name)}: {float(value):g}</title></circle>"
            )
    for index, category in enumerate(categories):
        body.append(_label(category, LEFT + offset + step * index + 4))
    return _frame("line", title, body, series, top)
