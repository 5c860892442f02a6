"""A per-metric range chart as inline SVG: the mean as a line inside a min-max band, minute after minute.

Consecutive minutes with readings make a run: a band from each minute's
minimum to its maximum, and the mean drawn through it. A minute without
readings breaks the run (no line is drawn across a gap); a run of one minute
is drawn as a min-max stroke with the mean as a dot. Every minute keeps a
small dot with its numbers as a tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from project.charts import Tick
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
class Run:
    """Consecutive minutes: a band polygon (min to max) and the mean's polyline, as SVG ``points``."""

    band: str
    mean: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    marks: list[Mark]
    runs: list[Run]
    """Runs of two minutes or more; a lone minute is only its mark."""
    lone: list[Mark]
    """The marks of one-minute runs: drawn as a min-max stroke and a dot."""
    ticks: list[Tick]
    """Times along the bottom (UTC): an hour ago, half an hour ago, now."""
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
    runs, lone = [], []
    for run in _consecutive(minutes, marks):
        if len(run) == 1:
            lone.append(run[0])
            continue
        upper = [f"{k.x},{k.y_max}" for k in run]
        lower = [f"{k.x},{k.y_min}" for k in reversed(run)]
        runs.append(Run(band=" ".join(upper + lower), mean=" ".join(f"{k.x},{k.y_mean}" for k in run)))
    ticks = [
        Tick(round(PAD_LEFT + f * MINUTES * slot, 1), f"{start + timedelta(minutes=f * MINUTES):%H:%M}")
        for f in (0, 0.5, 1)
    ]
    return Chart(WIDTH, HEIGHT, marks, runs, lone, ticks, low, high, PAD_TOP + plot_h, PAD_TOP)


def _consecutive(minutes: list[Minute], marks: list[Mark]) -> list[list[Mark]]:
    """The marks split where a minute without readings falls between two with readings."""
    runs: list[list[Mark]] = []
    previous: datetime | None = None
    for m, mark in zip(minutes, marks, strict=True):
        if previous is None or m.minute - previous > timedelta(minutes=1):
            runs.append([])
        runs[-1].append(mark)
        previous = m.minute
    return runs
