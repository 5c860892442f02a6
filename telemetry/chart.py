"""A per-metric range chart as inline SVG: for each minute a min-max line and the mean as a dot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from telemetry.reports import Minute

WIDTH = 640
HEIGHT = 160
PAD_LEFT = 48
PAD_BOTTOM = 20
PAD_TOP = 10
MINUTES = 60


@dataclass(frozen=True)
class Mark:
    x: float
    y_min: float
    y_max: float
    y_mean: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    marks: list[Mark]
    low: float
    high: float
    baseline: float
    top: float


def range_chart(minutes: list[Minute], now: datetime) -> Chart:
    """X is the minute within the last hour; Y spans the hour's min to max."""
    low = min((m.minimum for m in minutes), default=0.0)
    high = max((m.maximum for m in minutes), default=1.0)
    span = (high - low) or 1.0
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / MINUTES
    start = now - timedelta(minutes=MINUTES)

    def y(value: float) -> float:
        return round(PAD_TOP + plot_h - plot_h * (value - low) / span, 1)

    marks = []
    for m in minutes:
        offset = (m.minute - start).total_seconds() / 60
        x = round(PAD_LEFT + max(0.0, min(MINUTES - 0.5, offset)) * slot, 1)
        title = f"{m.minute:%H:%M}: n={m.count} min={m.minimum:g} mean={m.mean:.3g} max={m.maximum:g}"
        marks.append(Mark(x, y(m.minimum), y(m.maximum), y(m.mean), title))
    return Chart(WIDTH, HEIGHT, marks, low, high, PAD_TOP + plot_h, PAD_TOP)
