"""The ledger's bulk claim (one prepared INSERT) writes the rows ``claim`` writes, and refuses a claimed event."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from eventbus import ledger
from eventbus.envelope import Envelope
from eventbus.models import ProcessedEvent
from eventbus.publish import publish
from signups.events import UserSignedUp

pytestmark = pytest.mark.django_db

SUBSCRIBER = "analytics.record_event"
COMPARED = ("subscriber", "outcome", "event_type", "aggregate", "sequence", "task_id", "worker", "runtime_ms")


def envelopes(count: int) -> list[Envelope]:
    with mock.patch("eventbus.publish.dispatch_after_commit"), transaction.atomic():
        return [publish(UserSignedUp(user_id=n), aggregate=f"user:{n}") for n in range(900, 900 + count)]


def test_a_bulk_claim_writes_the_row_a_single_claim_writes() -> None:
    # given
    one, many, more = envelopes(3)
    ledger.claim(one, SUBSCRIBER, "task-1", "host-a")

    # when
    with transaction.atomic():
        ledger.claim_many([(many, "task-2"), (more, "")], SUBSCRIBER, "host-a")

    # then: the same columns, the same kind of values, read back through the ORM
    single = ProcessedEvent.objects.get(event_id=one.id)
    bulk = ProcessedEvent.objects.get(event_id=many.id)
    assert {f: getattr(bulk, f) for f in COMPARED} == {
        **{f: getattr(single, f) for f in COMPARED},
        "aggregate": many.aggregate,
        "sequence": many.sequence,
        "task_id": "task-2",
    }
    assert abs(bulk.processed_at - timezone.now()) < timedelta(seconds=30)
    assert ProcessedEvent.objects.get(event_id=more.id).task_id == ""
    assert ledger.processed_ids([one.id, many.id, more.id], SUBSCRIBER) == {one.id, many.id, more.id}


def test_a_bulk_claim_with_one_event_already_claimed_fails_whole() -> None:
    # given
    claimed, fresh = envelopes(2)
    ledger.claim(claimed, SUBSCRIBER)

    # when / then: the unique ledger row refuses it, and the transaction takes the other back
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.claim_many([(fresh, "t"), (claimed, "t")], SUBSCRIBER)
    assert not ProcessedEvent.objects.filter(event_id=fresh.id).exists()
