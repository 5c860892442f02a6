"""/metrics in Prometheus's text format, read at scrape time from real Redis, broker and database."""

from __future__ import annotations

import math
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from devinbox.sink import SmtpSink
from eventbus.models import ProcessedEvent
from notifications.provider import email_breaker
from project import queues
from tests.brokers import dead_broker_url, using_broker
from tests.conftest import wait_for
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


def scrape(client: Client, **headers: str) -> dict[str, list[Sample]]:
    """Family name to its samples, parsed the way Prometheus's own client parses."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (found,) = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def test_the_families_after_a_real_signup(worker: Any, smtp_sink: SmtpSink, client: Client) -> None:
    # given: a sign-up whose two deliveries a real worker made
    sign_up_via_client(client)
    wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")

    # when
    families = scrape(client)

    # then: the outbox holds one row, by the database's estimate (PostgreSQL's statistics catch up within seconds)
    wait_for(
        lambda: value(scrape(client)["eventbus_outbox_rows_estimate"], "eventbus_outbox_rows_estimate") == 1,
        what="the outbox's size estimate to count the sign-up's row",
    )
    assert "eventbus_events_published" not in families  # a GROUP BY over the whole outbox per scrape: gone
    # one delivery per subscriber, nothing retried, shed or dead-lettered
    for subscriber in (EMAIL, ANALYTICS):
        assert value(families["eventbus_delivered"], "eventbus_delivered_total", subscriber=subscriber) == 1
        for counter in ("retries", "dead_lettered", "shed", "deferred", "duplicates"):
            assert value(families[f"eventbus_{counter}"], f"eventbus_{counter}_total", subscriber=subscriber) == 0
        assert value(families["eventbus_dead_letters"], "eventbus_dead_letters", subscriber=subscriber) == 0
    # a latency histogram per subscriber holding that one delivery
    histogram = families["eventbus_delivery_latency_seconds"]
    for subscriber in (EMAIL, ANALYTICS):
        assert value(histogram, "eventbus_delivery_latency_seconds_count", subscriber=subscriber) == 1
        assert 0 < value(histogram, "eventbus_delivery_latency_seconds_sum", subscriber=subscriber) < 60
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in histogram
            if s.name == "eventbus_delivery_latency_seconds_bucket" and s.labels["subscriber"] == subscriber
        ]
        assert buckets[-1] == (math.inf, 1)
        assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    # queues empty, below their marks; nothing waiting; the breaker closed; every source read
    for queue in queues.WORKER_QUEUES:
        assert value(families["eventbus_queue_depth"], "eventbus_queue_depth", queue=queue) == 0
        assert (
            value(families["eventbus_queue_high_water_mark"], "eventbus_queue_high_water_mark", queue=queue) == 10_000
        )
    assert value(families["eventbus_outbox_waiting"], "eventbus_outbox_waiting") == 0
    assert value(families["eventbus_outbox_oldest_age_seconds"], "eventbus_outbox_oldest_age_seconds") == 0
    assert value(families["eventbus_breaker_state"], "eventbus_breaker_state", breaker="smtp") == 0
    assert value(families["eventbus_rate_limiter_limit"], "eventbus_rate_limiter_limit", limiter="smtp") == 10
    for source in ("database", "broker", "redis"):
        assert value(families["eventbus_metrics_source_up"], "eventbus_metrics_source_up", source=source) == 1


def test_an_open_breaker_and_stored_dead_letters_show(broker: None, client: Client, settings: Any) -> None:
    breaker = email_breaker()
    for _ in range(settings.EMAIL_BREAKER_FAILURE_THRESHOLD):
        breaker.record_failure()
    dead_letter(subscriber=ANALYTICS)
    dead_letter(subscriber=ANALYTICS, task_id="another")

    families = scrape(client)

    assert value(families["eventbus_breaker_state"], "eventbus_breaker_state", breaker="smtp") == 2
    assert value(families["eventbus_dead_letters"], "eventbus_dead_letters", subscriber=ANALYTICS) == 2


def test_a_dead_broker_leaves_out_the_queue_families_only(broker: None, client: Client) -> None:
    with using_broker(dead_broker_url()):
        families = scrape(client)

    up = families["eventbus_metrics_source_up"]
    assert value(up, "eventbus_metrics_source_up", source="broker") == 0
    assert value(up, "eventbus_metrics_source_up", source="redis") == 1
    assert "eventbus_queue_depth" not in families
    assert "eventbus_delivered" in families and "eventbus_outbox_waiting" in families


def test_the_token_is_enforced_when_set(broker: None, client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-token"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    basic = client.get("/metrics", headers={"Authorization": "Basic s3cret-token"})
    right = scrape(client, Authorization="Bearer s3cret-token")

    assert missing.status_code == wrong.status_code == basic.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert "eventbus_delivered" in right


def test_without_a_token_the_endpoint_is_open(broker: None, client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert "eventbus_queue_depth" in scrape(client)
    assert client.post("/metrics").status_code == 405
