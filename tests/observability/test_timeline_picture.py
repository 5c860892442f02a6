"""The event timeline's picture (ops/timeline/picture.py): a lane per subscriber, each timed step a mark in time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from ops.timeline import EventTimeline, OutboxState, SubscriberStory, TimelineStep
from ops.timeline.picture import LABEL_WIDTH, RIGHT_PAD, WIDTH, offset_text, picture

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def story(*subscribers: SubscriberStory) -> EventTimeline:
    return EventTimeline(
        event_id=uuid.uuid4(),
        type="user.signed_up",
        version=1,
        aggregate="user:1",
        sequence=1,
        occurred_at=T0,
        correlation_id="",
        causation_id=None,
        envelope_json="{}",
        outbox=OutboxState("dispatched", at(0), at(1), 1, "", ()),
        subscribers=subscribers,
        previous=None,
        next=None,
        aggregate_events=(),
    )


def subscriber(label: str, *steps: TimelineStep) -> SubscriberStory:
    return SubscriberStory(label, label, "q", True, "done", "done", steps, ())


def test_each_lane_has_its_steps_as_marks_on_one_time_scale_from_the_event_to_its_last_step() -> None:
    email = subscriber(
        "welcome email",
        TimelineStep("queued", "queued", at(1)),
        TimelineStep("retried", "retried", at(5), detail="SMTP 451"),
        TimelineStep("succeeded", "succeeded", at(9)),
    )
    analytics = subscriber("analytics", TimelineStep("queued", "queued", at(1)), TimelineStep("pending", "later", None))

    drawn = picture(story(email, analytics))

    left, right = LABEL_WIDTH, WIDTH - RIGHT_PAD
    assert [lane.label for lane in drawn.lanes] == ["outbox", "welcome email", "analytics"]
    email_lane = drawn.lanes[1]
    assert [m.kind for m in email_lane.marks] == ["queued", "retried", "succeeded"]
    assert email_lane.marks[-1].x == right  # the last step ends the scale
    assert email_lane.marks[1].x == round(left + (right - left) * 5 / 9, 1)
    assert email_lane.marks[1].title == "+5.0 s: retried: SMTP 451"
    assert drawn.lanes[0].marks[0].x == left  # written when the event occurred
    assert len(drawn.lanes[2].marks) == 1  # a step without a time stays out of the picture
    assert [t.text for t in drawn.ticks] == ["+0", "+4.5 s", "+9.0 s"]
    assert drawn.lanes[2].y > drawn.lanes[1].y > drawn.lanes[0].y
    assert drawn.axis_y > drawn.lanes[-1].y


def test_offsets_read_in_the_unit_that_fits() -> None:
    assert [offset_text(s) for s in (0, 0.012, 1.46, 245, 7380)] == ["+0", "+12 ms", "+1.5 s", "+4m 05s", "+2h 03m"]
