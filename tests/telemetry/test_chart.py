"""The telemetry range chart (telemetry/chart.py): a mean line in a min-max band, broken where minutes are missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telemetry.chart import range_chart
from telemetry.reports import Minute

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def minute(minutes_ago: int, low: float, mean: float, high: float) -> Minute:
    return Minute(NOW.replace(second=0) - timedelta(minutes=minutes_ago), 3, low, mean, high)


def points(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in text.split())]


def test_consecutive_minutes_make_a_band_with_the_mean_drawn_through_it() -> None:
    minutes = [minute(3, 1, 2, 3), minute(2, 2, 3, 4), minute(1, 0, 1, 2)]

    chart = range_chart(minutes, NOW)

    assert chart.lone == [] and len(chart.runs) == 1
    run = chart.runs[0]
    band, mean = points(run.band), points(run.mean)
    marks = chart.marks
    assert mean == [(m.x, m.y_mean) for m in marks]
    assert band == [(m.x, m.y_max) for m in marks] + [(m.x, m.y_min) for m in reversed(marks)]
    assert all(m.y_max <= m.y_mean <= m.y_min for m in marks)  # SVG's y grows downwards
    assert [t.text for t in chart.ticks] == ["11:00", "11:30", "12:00"]


def test_a_missing_minute_breaks_the_line_and_a_lone_minute_is_a_stroke_and_a_dot() -> None:
    minutes = [minute(10, 1, 2, 3), minute(9, 1, 2, 3), minute(5, 1, 2, 3), minute(2, 1, 2, 3), minute(1, 1, 2, 3)]

    chart = range_chart(minutes, NOW)

    assert [len(points(run.mean)) for run in chart.runs] == [2, 2]
    assert chart.lone == [chart.marks[2]]
    assert len(chart.marks) == 5  # every minute keeps its dot and tooltip
