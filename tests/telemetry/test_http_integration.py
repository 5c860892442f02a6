"""Batches over real HTTP (a live server thread) with a real worker on the telemetry queue, real Redis.

Rollups are exact; a resent batch changes nothing; 429 above the telemetry
queue's high-water mark; a batch the subscriber cannot fold is dead-lettered
with its reason while the rest keeps flowing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.db import transaction

from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventbus.outbox.publish import publish
from project import queues
from telemetry.events import ReadingsReceived
from telemetry.models import Reading, Rollup
from telemetry.reports import rollup_lag
from tests.conftest import queue_length, running_worker, wait_for
from tests.telemetry.helpers import URL, batch, device, headers, reading

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ROLLUP = "telemetry.rollup"


@pytest.fixture
def http(live_server: Any, broker: None, redis_prefix: str) -> Iterator[requests.Session]:
    session = requests.Session()
    session.base_url = live_server.url  # type: ignore[attr-defined]
    yield session
    session.close()


def post(http: requests.Session, token: str, payload: Any) -> requests.Response:
    return http.post(http.base_url + URL, json=payload, headers=headers(token), timeout=10)  # type: ignore[attr-defined]


def buckets() -> dict[tuple[str, str], tuple[int, float, float, float]]:
    return {
        (r.device.name, r.metric): (r.count, round(r.total, 6), r.minimum, r.maximum)
        for r in Rollup.objects.select_related("device")
    }


def test_batches_are_rolled_up_exactly_once_and_late_readings_update_their_minute(http: requests.Session) -> None:
    # given: two devices, two metrics
    _, a = device("a")
    _, b = device("b")
    first = {"readings": [reading(1, value=1.0), reading(2, value=3.0), reading(3, metric="hum", value=50.0)]}
    second = {"readings": [reading(1, value=10.0), reading(2, value=-2.5)]}

    with running_worker(queues.TELEMETRY, queues.DEAD_LETTER):
        # when: both post over HTTP
        assert post(http, a, first).json() == {"accepted": 3, "duplicates": 0}
        assert post(http, b, second).json() == {"accepted": 2, "duplicates": 0}
        wait_for(lambda: ProcessedEvent.objects.filter(subscriber=ROLLUP).count() == 2, what="two batches rolled up")

        # then: one row per device, metric and minute, with exact figures
        assert buckets() == {
            ("a", "temp"): (2, 4.0, 1.0, 3.0),
            ("a", "hum"): (1, 50.0, 50.0, 50.0),
            ("b", "temp"): (2, 7.5, -2.5, 10.0),
        }

        # when: a resend of the first batch (a device's timeout), and a late reading 30 minutes old
        assert post(http, a, first).json() == {"accepted": 0, "duplicates": 3}
        late = post(http, a, {"readings": [reading(4, value=7.0, minutes_ago=30), reading(1, value=99.0)]})
        assert late.json() == {"accepted": 1, "duplicates": 1}
        wait_for(lambda: ProcessedEvent.objects.filter(subscriber=ROLLUP).count() == 3, what="the late batch")
        wait_for(lambda: queue_length(queues.TELEMETRY) == 0, what="the queue drained")

    # then: the resend changed nothing; the late reading has its own minute; seq 1 kept its first value
    rows = Rollup.objects.filter(device__name="a", metric="temp").order_by("minute")
    assert [(r.count, r.total) for r in rows] == [(1, 7.0), (2, 4.0)]
    assert Reading.objects.get(device__name="a", seq=1).value == 1.0
    assert OutboxEvent.objects.filter(type="telemetry.readings_received").count() == 3
    assert not DeadLetter.objects.exists()
    # and the dashboard's lag covers the three batches, arrival to rollup
    lag = rollup_lag()
    assert lag.count == 3 and lag.p50 is not None and lag.p99 is not None and 0 < lag.p50 <= lag.p99 < 15
    page = http.get(http.base_url + "/telemetry/", timeout=10).text  # type: ignore[attr-defined]
    assert '<dd id="lag-count">3</dd>' in page


def test_429_with_retry_after_above_the_high_water_mark_and_counted_in_metrics(
    http: requests.Session, settings: Any
) -> None:
    # given: no worker, a high-water mark of 3 messages on the telemetry queue, depth read on every request
    settings.EVENTBUS_HIGH_WATER_MARKS = "telemetry=3"
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 0.0
    _, token = device("flood")

    # when: four batches
    statuses = [post(http, token, batch(n * 10, 5)).status_code for n in range(4)]

    # then: three fill the queue, the fourth is shed at the door, before the database
    assert statuses == [202, 202, 202, 429]
    assert queue_length(queues.TELEMETRY) == 3
    refused = post(http, token, batch(100, 5))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "high-water mark 3" in refused.json()["detail"]
    assert Reading.objects.count() == 15
    metrics = http.get(http.base_url + "/metrics", timeout=10).text  # type: ignore[attr-defined]
    assert 'telemetry_throttled_total{device="flood",reason="pressure"} 2.0' in metrics


def test_a_poison_batch_is_dead_lettered_with_its_reason_and_the_rest_keeps_flowing(http: requests.Session) -> None:
    # given: an event whose reading cannot be folded (the API never sends one: a producer's bug)
    dev, token = device("p")
    with transaction.atomic():
        poison = publish(
            ReadingsReceived(device_id=dev.pk, readings=[{"seq": 9, "at": "not a time", "metric": "t", "value": 1}]),
            aggregate=f"device:{dev.pk}",
        )

    with running_worker(queues.TELEMETRY, queues.DEAD_LETTER):
        # when: good batches follow it
        for n in range(3):
            assert post(http, token, batch(n * 10, 4, value=2.0)).status_code == 202

        # then: the good ones are rolled up, the poison one is a dead letter saying why
        wait_for(
            lambda: (
                Rollup.objects.filter(device=dev).first() is not None and Rollup.objects.get(device=dev).count == 12
            ),
            what="12 readings rolled up",
        )
        letter = wait_for(lambda: DeadLetter.objects.filter(subscriber=ROLLUP).first(), what="the dead letter")
    assert str(letter.event_id) == str(poison.id)
    assert "cannot be folded" in letter.reason
    assert ProcessedEvent.objects.filter(subscriber=ROLLUP).count() == 3
