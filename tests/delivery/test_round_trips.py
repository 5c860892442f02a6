"""What a delivery costs in Redis round trips, end to end through the consumer (figures 1 and 2 hang on it):
one before the effect and one after, for a single delivery and for a whole batch."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import transaction

from analytics.models import AnalyticsEvent
from eventbus.contract import registry
from eventbus.delivery.batch import ACK, Item
from eventbus.models import OutboxEvent
from eventbus.outbox.publish import publish
from signups.events import UserSignedUp
from tests.delivery.test_bookkeeping import CountedCommands

pytestmark = pytest.mark.django_db(transaction=True)

ANALYTICS = "analytics.record_event"


def wires(*user_ids: int) -> list[dict[str, Any]]:
    """Sign-ups in the outbox (their dispatch held back), as the messages' bodies carry them."""
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        rows = [publish(UserSignedUp(user_id=n, channel="web"), aggregate=f"user:{n}") for n in user_ids]
    return [OutboxEvent.objects.get(id=row.id).to_wire() for row in rows]


def test_a_delivery_costs_two_round_trips(redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = registry.get(ANALYTICS).task
    (wire,) = wires(1)
    counted = CountedCommands(monkeypatch)

    task.push_request(id="round-trips-1", retries=0, hostname="test", delivery_info={})
    try:
        result = task.consume(wire)
    finally:
        task.pop_request()

    assert result["status"] == "processed"
    assert counted.round_trips == 2


def test_a_batch_costs_two_round_trips_whatever_its_size(redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = registry.get(ANALYTICS).task
    items = [
        Item(request={"id": f"round-trips-batch-{n}", "retries": 0, "hostname": "test"}, args=(wire,))
        for n, wire in enumerate(wires(11, 12, 13, 14, 15))
    ]
    counted = CountedCommands(monkeypatch)

    task.push_request(hostname="test")
    try:
        answers = task.consume_batch(items)
    finally:
        task.pop_request()

    assert answers == [ACK] * 5
    assert AnalyticsEvent.objects.count() == 5
    assert counted.round_trips == 2
