"""The broker (and with it Redis) goes away while devices post readings: batches are still accepted
(202), quickly, and are rolled up once it is back; none is lost or counted twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.outbox.relay import relay
from project import queues
from telemetry.models import Reading, Rollup
from tests import bounds
from tests.conftest import running_worker, wait_for
from tests.faults.processes import PrivateRedis
from tests.telemetry.helpers import URL, batch, device, headers

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_batches_during_a_broker_outage_are_accepted_and_rolled_up_after_it(
    private_redis: PrivateRedis, live_server: Any
) -> None:
    _, token = device("outage")

    def post(payload: dict[str, Any]) -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = requests.post(live_server.url + URL, json=payload, headers=headers(token), timeout=15)
        return response, time.monotonic() - started

    # given: a batch accepted and dispatched while the broker is up
    first = batch(1, 50, value=1.0)
    assert post(first)[0].json() == {"accepted": 50, "duplicates": 0}

    # when: the broker stops, and the device sends a new batch and resends the first
    private_redis.stop()
    during, took = post(batch(51, 50, value=3.0))
    resent, took_resend = post(first)

    # then: both answered quickly; the new one waits in the outbox
    assert during.status_code == 202 and during.json() == {"accepted": 50, "duplicates": 0}
    assert resent.json() == {"accepted": 0, "duplicates": 50}
    # The door's Redis and broker reads and the on-commit dispatch are bounded
    # (EVENTBUS_PUBLISH_TIMEOUT, fail-fast connections): a request must not wait on a dead broker.
    slowest = max(took, took_resend)
    assert slowest < bounds.request_with_broker_down(), f"{slowest:.2f}s with the broker down"
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count() == 1

    # when: the broker comes back; the relay (beat's job) sends what waited; a worker consumes
    private_redis.start()
    assert relay(grace=0).dispatched == 1
    with running_worker(queues.TELEMETRY, queues.DEAD_LETTER):
        wait_for(
            lambda: ProcessedEvent.objects.filter(subscriber="telemetry.rollup").count() == 2,
            timeout=30,
            what="both batches rolled up",
        )

    # then: every reading once, in the rollup and in the table
    assert Reading.objects.count() == 100
    totals = Rollup.objects.values_list("count", "total")
    assert sum(c for c, _ in totals) == 100 and sum(t for _, t in totals) == 50 * 1.0 + 50 * 3.0
