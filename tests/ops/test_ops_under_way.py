"""/ops/'s "deliveries under way" (ops/inflight.py): sent and not yet ended, zero once every delivery has ended.

The outbox's unsettled count waits for the reconciler's look, a quarter of an
hour later; this figure does not: a delivery ends when its ledger entry or
its dead letter is written.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from eventbus.models import OutboxEvent, ProcessedEvent
from ops import inflight
from ops.views.access import VIEW_EVENTS
from project import queues
from tests import ops_users
from tests.conftest import running_worker, wait_for
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ANALYTICS = "analytics.record_event"


def figure(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(\d+)<', page)
    assert found, f"no #{element_id} on the page"
    return found.group(1)


def test_under_way_counts_sent_deliveries_until_each_has_ended(
    broker: None, smtp_sink: Any, client: Client, django_user_model: Any
) -> None:
    staff = ops_users.staff_client(django_user_model, VIEW_EVENTS)

    # given: a sign-up whose two deliveries are queued, no worker running
    sign_up_via_client(client)
    wait_for(lambda: OutboxEvent.objects.filter(last_sent_at__isnull=False).exists(), what="the event sent")
    before = staff.get("/ops/").text

    # when: a worker does both
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS):
        wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")
    after = staff.get("/ops/").text

    # then: two under way, then none; the reconciler has not looked yet, so the event is still unsettled
    assert figure(before, "deliveries-under-way") == "2"
    assert figure(after, "deliveries-under-way") == "0"
    assert figure(after, "reconcile-unsettled") == "1"


def test_a_dead_letter_ends_its_delivery_and_the_count_examines_the_newest_events_only(
    broker: None, client: Client
) -> None:
    sign_up_via_client(client)
    sign_up_via_client(client)
    wait_for(lambda: OutboxEvent.objects.filter(last_sent_at__isnull=False).count() == 2, what="both events sent")
    oldest = OutboxEvent.objects.order_by("last_sent_at").first()
    assert oldest is not None
    dead_letter(event_id=oldest.id, subscriber=ANALYTICS)

    everything = inflight.deliveries_under_way()
    newest_only = inflight.deliveries_under_way(sample=1)

    assert (everything.deliveries, everything.examined, everything.complete) == (3, 2, True)
    assert (newest_only.deliveries, newest_only.examined, newest_only.complete) == (2, 1, False)
