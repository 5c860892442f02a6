"""eventbus.observability.status reads the delivery steps: retrying, dead-lettered, replayed and stale deliveries."""

from __future__ import annotations

import pytest
from django.utils import timezone

from eventbus.models import DeliveryStep, OutboxEvent
from eventbus.observability import status
from ops import timeline
from signups.events import aggregate_of
from signups.services import sign_up
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

EMAIL = "notifications.send_welcome_email"
Step = DeliveryStep.Step


def dispatched_event() -> OutboxEvent:
    user = sign_up("ada@example.com", PASSWORD)
    event = OutboxEvent.objects.get(aggregate=aggregate_of(user.pk))
    OutboxEvent.objects.filter(pk=event.pk).update(status="dispatched", dispatched_at=timezone.now())
    return event


def email_state(event: OutboxEvent) -> str:
    (event_status,) = status.for_aggregate(event.aggregate)
    return {d.subscriber: d.state for d in event_status.deliveries}[EMAIL]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "queued"),
        ([Step.WAITING], "retrying"),
        ([Step.RETRIED], "retrying"),
        ([Step.RETRIED, Step.DEAD_LETTERED], "dead_lettered"),
        ([Step.RETRIED, Step.DEAD_LETTERED, Step.REPLAYED], "queued"),
        ([Step.STALE], "stale"),
        ([Step.DUPLICATE], "queued"),
    ],
)
def test_the_last_decisive_step_gives_the_state(steps: list[str], expected: str) -> None:
    event = dispatched_event()
    for kind in steps:
        DeliveryStep.objects.create(event_id=event.id, subscriber=EMAIL, step=kind)

    assert email_state(event) == expected
    story = timeline.build(event.id)
    assert story is not None
    assert {s.name: s.state for s in story.subscribers}[EMAIL] == expected
