"""The ops overview's shaped tables (ops/views/overview_tables.py): counters on their side, throughput as bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ops.snapshot import COUNTER_NAMES, MinuteCount, SubscriberStatus
from ops.views import overview_tables
from ops.views.overview_tables import DEAD_LETTERS_STORED, counter_groups, throughput_chart

EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


def subscriber(name: str, *, counters: dict[str, int] | None, dead_letters: int | None) -> SubscriberStatus:
    return SubscriberStatus(name=name, queue="q", critical=False, counters=counters, dead_letters=dead_letters)


def test_every_counter_is_a_row_once_with_the_dead_letters_stored_among_them() -> None:
    subscribers = [subscriber(EMAIL, counters=dict.fromkeys(COUNTER_NAMES, 0), dead_letters=0)]

    groups = counter_groups(subscribers, COUNTER_NAMES, link_dead_letters=True)

    names = [row.name for group in groups for row in group.rows]
    assert sorted(names) == sorted([*COUNTER_NAMES, DEAD_LETTERS_STORED])
    assert "Other" not in [group.title for group in groups]


def test_a_counter_no_group_names_is_still_shown_under_other() -> None:
    subscribers = [subscriber(EMAIL, counters={"new_counter": 3}, dead_letters=0)]

    groups = counter_groups(subscribers, ("new_counter",), link_dead_letters=False)

    assert [(g.title, [(r.label, r.cells[0].value) for r in g.rows]) for g in groups] == [
        ("How deliveries ended", [("Dead letters stored", 0)]),
        ("Other", [("New counter", 3)]),
    ]


def test_a_cell_is_a_column_per_subscriber_a_dash_when_unread_and_a_link_when_allowed() -> None:
    subscribers = [
        subscriber(ANALYTICS, counters={"delivered": 7}, dead_letters=2),
        subscriber(EMAIL, counters=None, dead_letters=None),
    ]

    allowed = {r.name: r for g in counter_groups(subscribers, ("delivered",), link_dead_letters=True) for r in g.rows}
    refused = {r.name: r for g in counter_groups(subscribers, ("delivered",), link_dead_letters=False) for r in g.rows}

    assert [c.value for c in allowed["delivered"].cells] == [7, None]
    assert [c.value for c in allowed[DEAD_LETTERS_STORED].cells] == [2, None]
    assert allowed[DEAD_LETTERS_STORED].cells[0].url == "/ops/deadletters/?subscriber=analytics.record_event"
    assert refused[DEAD_LETTERS_STORED].cells[0].url == ""


def minutes(*pairs: tuple[int, int]) -> list[MinuteCount]:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    return [
        MinuteCount(start + timedelta(minutes=i), 60.0, out, done, out / 60, done / 60)
        for i, (out, done) in enumerate(pairs)
    ]


def test_throughput_bars_are_as_tall_as_their_rate_the_busiest_reaching_the_top() -> None:
    chart = throughput_chart(minutes((60, 30), (0, 120), (0, 0)))

    published = [b for b in chart.bars if b.kind == "published"]
    processed = [b for b in chart.bars if b.kind == "processed"]
    plot = chart.baseline - chart.top
    assert chart.peak == 2.0
    assert [b.height for b in processed] == [round(plot / 4, 1), plot, 0.0]
    assert [b.height for b in published] == [round(plot / 2, 1), 0.0, 0.0]
    assert all(b.y + b.height == chart.baseline for b in chart.bars)
    assert processed[1].title == "12:01: 120 processed, 2.00/s"
    assert published[0].x < processed[0].x < published[1].x  # side by side, minute after minute


def test_an_idle_chart_has_flat_bars_and_labels_its_latest_minute() -> None:
    chart = throughput_chart(minutes(*[(0, 0)] * 10))

    assert chart.peak == 1.0
    assert {b.height for b in chart.bars} == {0.0}
    assert chart.ticks[-1].text == "12:09"
    assert len(chart.ticks) == 5
    assert chart.width == overview_tables.CHART_WIDTH
