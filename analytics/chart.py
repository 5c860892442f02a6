"""A server-rendered bar chart: geometry computed here, drawn as inline SVG by the template."""

from __future__ import annotations

from dataclasses import dataclass

from analytics.reports import DailyCount

WIDTH = 640
HEIGHT = 220
PAD_LEFT = 32
PAD_BOTTOM = 28
PAD_TOP = 12


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    series: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    max_value: int
    baseline: float


def daily_chart(counts: list[DailyCount]) -> Chart:
    top = max([1] + [max(c.signups, c.verifications) for c in counts])
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(1, len(counts))
    bar_w = slot * 0.38
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i, c in enumerate(counts):
        x0 = PAD_LEFT + i * slot + slot * 0.1
        for j, (series, value) in enumerate((("signups", c.signups), ("verifications", c.verifications))):
            h = plot_h * value / top
            bars.append(
                Bar(
                    x=round(x0 + j * bar_w, 1),
                    y=round(PAD_TOP + plot_h - h, 1),
                    width=round(bar_w, 1),
                    height=round(h, 1),
                    value=value,
                    series=series,
                    title=f"{c.day:%b %d}: {value} {series}",
                )
            )
        labels.append((round(x0 + bar_w, 1), f"{c.day:%d}"))
    return Chart(WIDTH, HEIGHT, bars, labels, top, PAD_TOP + plot_h)
