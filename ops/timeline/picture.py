"""An event's timeline as a picture: a lane per subscriber, each recorded step a mark at its time.

The event page (ops/templates/ops/timeline_detail.html) draws it as inline SVG
above the steps' lists. Time runs left to right from the moment the event
occurred to its last recorded step, on a linear scale; the first lane is the
outbox's (written, handed to the broker). A step the records give no time
stays out of the picture; the lists below still show it. Nothing here reads
the database: it only lays out what ``build()`` returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ops.timeline.story import EventTimeline
from project.charts import Tick

WIDTH = 720
LANE_HEIGHT = 30
LABEL_WIDTH = 190
"""Room left of the lanes for their names."""
RIGHT_PAD = 16
TOP = 8
AXIS_HEIGHT = 26


@dataclass(frozen=True)
class Mark:
    x: float
    kind: str
    """The step's kind (``queued``, ``succeeded``, ``retried``...): the CSS class that colours it."""
    title: str


@dataclass(frozen=True)
class Lane:
    label: str
    y: float
    """The lane's middle line."""
    marks: tuple[Mark, ...]
    start: float
    """Where its line starts and ends: its first and last mark (both the plot's left edge without marks)."""
    end: float


@dataclass(frozen=True)
class TimelinePicture:
    width: int
    height: int
    left: float
    right: float
    axis_y: float
    lanes: tuple[Lane, ...]
    ticks: tuple[Tick, ...]
    span_seconds: float


def offset_text(seconds: float) -> str:
    """``+0``, ``+12 ms``, ``+1.5 s``, ``+4m 05s``: how long after the event occurred."""
    if seconds <= 0:
        return "+0"
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"+{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"+{whole // 60}m {whole % 60:02d}s"
    return f"+{whole // 3600}h {whole % 3600 // 60:02d}m"


def picture(story: EventTimeline) -> TimelinePicture:
    """The lanes and marks of ``story``, laid out on one time scale from its occurrence to its last step."""
    start = story.occurred_at
    outbox_steps: list[tuple[datetime, str, str]] = [(story.outbox.created_at, "written", "written to the outbox")]
    if story.outbox.dispatched_at is not None:
        outbox_steps.append((story.outbox.dispatched_at, "queued", "handed to the broker"))
    lanes_in: list[tuple[str, list[tuple[datetime, str, str]]]] = [("outbox", outbox_steps)]
    for sub in story.subscribers:
        timed = [(s.at, s.kind, s.title + (f": {s.detail}" if s.detail else "")) for s in sub.steps if s.at]
        lanes_in.append((sub.label, timed))
    moments = [at for _, steps in lanes_in for at, _, _ in steps]
    span = max((max(moments, default=start) - start).total_seconds(), 0.001)
    left, right = float(LABEL_WIDTH), float(WIDTH - RIGHT_PAD)

    def x(at: datetime) -> float:
        offset = max(0.0, (at - start).total_seconds())
        return round(left + (right - left) * min(1.0, offset / span), 1)

    lanes = []
    for index, (label, steps) in enumerate(lanes_in):
        marks = tuple(
            Mark(x(at), kind, f"{offset_text((at - start).total_seconds())}: {title}") for at, kind, title in steps
        )
        xs = [m.x for m in marks] or [left]
        lanes.append(Lane(label, TOP + LANE_HEIGHT * (index + 0.5), marks, min(xs), max(xs)))
    axis_y = TOP + LANE_HEIGHT * len(lanes)
    ticks = tuple(Tick(round(left + (right - left) * f, 1), offset_text(span * f)) for f in (0.0, 0.5, 1.0))
    height = int(axis_y + AXIS_HEIGHT)
    return TimelinePicture(WIDTH, height, left, right, axis_y, tuple(lanes), ticks, span)
