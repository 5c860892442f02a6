"""The ops overview's two shaped tables: the subscribers' counters turned on their side, and throughput as a chart.

The snapshot (ops/status.py) has one row per subscriber and fourteen
counters; a page with a column per counter is wider than any laptop. Here a
counter is a row, grouped by what it says, and a subscriber is a column: four
subscribers fit in any window. Nothing is computed that the snapshot does not
hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.urls import reverse
from django.utils.http import urlencode

from eventbus import ops_api
from ops.snapshot import MinuteCount, SubscriberStatus
from project.charts import Tick

DEAD_LETTERS_STORED = "dead_letters"
"""The row under the counters that counts the dead letters stored, from the database."""

COUNTER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "How deliveries ended",
        (
            ops_api.DELIVERED,
            ops_api.DUPLICATES,
            ops_api.STALE,
            ops_api.SHED,
            ops_api.DEAD_LETTERED,
            DEAD_LETTERS_STORED,
        ),
    ),
    ("Sent again", (ops_api.RETRIES, ops_api.REDELIVERED)),
    (
        "Held back",
        (
            ops_api.DEFERRED,
            ops_api.ORDER_WAITS,
            ops_api.RATE_LIMIT_WAITS,
            ops_api.BREAKER_WAITS,
            ops_api.EFFECT_WAITS,
        ),
    ),
    ("Batching", (ops_api.BATCHES, ops_api.BATCHED)),
)
"""Every counter of ops.status.COUNTER_NAMES in one group; one the groups forget lands under "Other"."""


@dataclass(frozen=True)
class Column:
    """A subscriber's column heading: its name in dotted parts, so that a narrow column breaks it at the dots."""

    name: str
    parts: tuple[str, ...]
    queue: str
    critical: bool


def columns(subscribers: Sequence[SubscriberStatus]) -> tuple[Column, ...]:
    return tuple(Column(s.name, tuple(s.name.split(".")), s.queue, s.critical) for s in subscribers)


@dataclass(frozen=True)
class Cell:
    subscriber: str
    value: int | None
    """None when its source could not be read (shown as a dash)."""
    url: str = ""


@dataclass(frozen=True)
class CounterRow:
    name: str
    label: str
    cells: tuple[Cell, ...]
    """One per subscriber, in the snapshot's order."""


@dataclass(frozen=True)
class CounterGroup:
    title: str
    rows: tuple[CounterRow, ...]


def label(name: str) -> str:
    return "Dead letters stored" if name == DEAD_LETTERS_STORED else name.replace("_", " ").capitalize()


def counter_groups(
    subscribers: Sequence[SubscriberStatus], counter_names: Sequence[str], *, link_dead_letters: bool
) -> tuple[CounterGroup, ...]:
    """The counters as rows under their group's title, a cell per subscriber; dead letters linked when allowed."""
    grouped = [name for _, names in COUNTER_GROUPS for name in names]
    groups = [*COUNTER_GROUPS, ("Other", tuple(n for n in counter_names if n not in grouped))]
    shaped = []
    for title, names in groups:
        rows = tuple(
            _row(name, subscribers, link_dead_letters)
            for name in names
            if name in (*counter_names, DEAD_LETTERS_STORED)
        )
        if rows:
            shaped.append(CounterGroup(title, rows))
    return tuple(shaped)


def _row(name: str, subscribers: Sequence[SubscriberStatus], link_dead_letters: bool) -> CounterRow:
    cells = []
    for s in subscribers:
        if name == DEAD_LETTERS_STORED:
            url = ""
            if s.dead_letters and link_dead_letters:
                url = reverse("ops:deadletters") + "?" + urlencode({"subscriber": s.name})
            cells.append(Cell(s.name, s.dead_letters, url))
        else:
            cells.append(Cell(s.name, None if s.counters is None else s.counters.get(name, 0)))
    return CounterRow(name, label(name), tuple(cells))


# --- throughput as a chart ------------------------------------------------------

CHART_WIDTH = 640
CHART_HEIGHT = 180
PAD_LEFT = 52
PAD_BOTTOM = 22
PAD_TOP = 12


@dataclass(frozen=True)
class Bar:
    kind: str
    """``published`` or ``processed``: the CSS class that colours it."""
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class ThroughputChart:
    width: int
    height: int
    left: float
    """Where the plot starts: the values' labels stand left of it."""
    baseline: float
    top: float
    peak: float
    """Events per second at the top of the chart: the busiest bar's, or 1 when nothing happened."""
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]


def throughput_chart(minutes: Sequence[MinuteCount]) -> ThroughputChart:
    """Per minute, oldest left, two bars side by side: events published and effects processed per second."""
    rates = [rate for m in minutes for rate in (m.published_per_second, m.processed_per_second)]
    peak = max(rates, default=0.0) or 1.0
    plot_height = CHART_HEIGHT - PAD_BOTTOM - PAD_TOP
    baseline = float(PAD_TOP + plot_height)
    slot = (CHART_WIDTH - PAD_LEFT) / max(1, len(minutes))
    bar_width = round(slot * 0.38, 1)
    bars, ticks = [], []
    for index, m in enumerate(minutes):
        left = PAD_LEFT + index * slot
        when = f"{m.minute:%H:%M}" + (" (so far)" if m.seconds < 60 else "")
        for offset, kind, count, rate in (
            (0.1, "published", m.published, m.published_per_second),
            (0.52, "processed", m.processed, m.processed_per_second),
        ):
            height = round(plot_height * rate / peak, 1)
            title = f"{when}: {count} {kind}, {rate:.2f}/s"
            bars.append(
                Bar(kind, round(left + slot * offset, 1), round(baseline - height, 1), bar_width, height, title)
            )
        if (len(minutes) - 1 - index) % 2 == 0 or len(minutes) <= 6:
            ticks.append(Tick(round(left + slot / 2, 1), f"{m.minute:%H:%M}"))
    return ThroughputChart(
        CHART_WIDTH, CHART_HEIGHT, float(PAD_LEFT), baseline, float(PAD_TOP), peak, tuple(bars), tuple(ticks)
    )
