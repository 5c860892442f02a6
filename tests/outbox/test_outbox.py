"""The transactional outbox against the real Redis: no lost event, no phantom event."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.db import transaction
from django.test import Client, override_settings

from devinbox.sink import SmtpSink, free_port
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from project import queues
from signups.events import UserSignedUp
from tests import bounds
from tests.brokers import dead_broker_url, using_broker
from tests.conftest import broker_is_redis, drain_messages, queue_length, running_worker, wait_for
from tests.environment import start_redis_server
from tests.factories import sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.usefixtures("broker")]


def test_commit_sends_one_message_per_subscriber_on_its_own_queue() -> None:
    # when
    with transaction.atomic():
        envelope = publish(UserSignedUp(user_id=7, channel="web"), aggregate="user:7")

    # then
    notifications = drain_messages(queues.NOTIFICATIONS)
    analytics = drain_messages(queues.ANALYTICS)
    assert [m.headers["task"] for m in notifications] == ["notifications.send_welcome_email"]
    assert [m.headers["task"] for m in analytics] == ["analytics.record_event"]
    for message in notifications + analytics:
        assert message.content_type == "application/json"
        assert json.loads(message.body)[0][0]["id"] == str(envelope.id)
    assert OutboxEvent.objects.get(pk=envelope.id).status == OutboxEvent.Status.DISPATCHED


def test_a_rolled_back_transaction_sends_nothing_and_keeps_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(UserSignedUp(user_id=8, channel="web"), aggregate="user:8")
        raise RuntimeError("the sign-up failed after publishing")

    assert not OutboxEvent.objects.exists()
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 0


def test_a_signup_succeeds_with_the_broker_down_and_the_relay_sends_it_later() -> None:
    client = Client()
    dead = dead_broker_url()

    # given: nothing listens where the broker should be
    with using_broker(dead):
        started = time.monotonic()
        response = sign_up_via_client(client)
        elapsed = time.monotonic() - started

    # then: the person is signed up, and the event waits in the outbox
    assert response.status_code == 302
    assert elapsed < bounds.request_with_broker_down(), f"publishing hung for {elapsed:.1f}s on a dead broker"
    event = OutboxEvent.objects.get()
    assert event.status == OutboxEvent.Status.PENDING
    assert "Connection refused" in event.last_error or "Error" in event.last_error
    assert queue_length(queues.NOTIFICATIONS) == 0

    # when: the relay runs against a reachable broker
    call_command("relay_outbox", grace=0)

    # then
    event.refresh_from_db()
    assert event.status == OutboxEvent.Status.DISPATCHED
    assert queue_length(queues.NOTIFICATIONS) == 1
    assert queue_length(queues.ANALYTICS) == 1
    assert str(event.id) in drain_messages(queues.ANALYTICS)[0].headers["argsrepr"]


def test_the_relay_leaves_young_rows_to_their_on_commit_dispatch() -> None:
    with using_broker(dead_broker_url()):
        publish(UserSignedUp(user_id=9, channel="web"), aggregate="user:9")

    assert relay(grace=60).dispatched == 0
    assert relay(grace=0).dispatched == 1


def test_two_relays_at_once_send_each_row_once() -> None:
    # given: 60 events stranded by a broker outage
    with using_broker(dead_broker_url()):
        for n in range(60):
            publish(UserSignedUp(user_id=1000 + n, channel="web"), aggregate=f"user:{1000 + n}")
    assert OutboxEvent.objects.filter(status="pending").count() == 60

    # when: two relays run at the same time, in small batches
    results: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        from django.db import connection

        barrier.wait()
        try:
            results.append(relay(grace=0, batch=5).dispatched)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # then: every event went out exactly once, whoever sent it
    assert sum(results) == 60
    assert not OutboxEvent.objects.filter(status="pending").exists()
    assert queue_length(queues.NOTIFICATIONS) == 60
    assert queue_length(queues.ANALYTICS) == 60


def test_sequences_increase_per_aggregate() -> None:
    with transaction.atomic():
        first = publish(UserSignedUp(user_id=5, channel="web"), aggregate="user:5")
        other = publish(UserSignedUp(user_id=6, channel="web"), aggregate="user:6")
        second = publish(UserSignedUp(user_id=5, channel="web"), aggregate="user:5")

    assert (first.sequence, second.sequence, other.sequence) == (1, 2, 1)


@pytest.mark.skipif(not broker_is_redis(), reason="key prefixes apply to a Redis broker")
def test_this_run_writes_only_under_its_own_key_prefix(smtp_sink: SmtpSink, tmp_path: Path) -> None:
    """On a Redis of its own (the shared one has other runs' keys), a sign-up's whole round trip
    (the outbox's publish, a worker's delivery of both messages, its bookkeeping) leaves no key
    outside this run's prefix."""
    from django.conf import settings

    prefix = settings.REDIS_KEY_PREFIX
    assert prefix.startswith("test-")
    port = free_port()
    server = start_redis_server(port, tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with override_settings(REDIS_URL=url), using_broker(url):
            own = redis.Redis.from_url(url, decode_responses=True)
            assert own.dbsize() == 0
            # when: an event is published and both its deliveries are done by a worker
            with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS):
                with transaction.atomic():
                    publish(UserSignedUp(user_id=11, channel="web"), aggregate="user:11")
                wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")
            keys = sorted(own.scan_iter(count=500))
    finally:
        server.kill()
        server.wait(timeout=15)

    # then: no key outside the prefix
    print(f"keys in the private Redis: {keys}")
    outside = [k for k in keys if not k.startswith(prefix)]
    assert not outside, f"keys outside the run's prefix {prefix!r}: {outside}"
    # and: keys were written under it, by the broker (its bindings) and by the bus (its bookkeeping)
    assert any(k.startswith(prefix + "_kombu.binding") for k in keys)
    assert any(k.startswith(prefix + "eventbus:") for k in keys)
