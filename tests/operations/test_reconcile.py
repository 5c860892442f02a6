"""The delivery reconciler and the broker watch, against the real Redis (no worker: the ledger is written by hand)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from eventbus.models import BrokerLoss, BrokerMarker, DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.operations import brokerwatch
from eventbus.operations import checks as safety
from eventbus.operations.reconcile import reconcile
from eventbus.outbox.publish import publish
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app
from signups.events import UserSignedUp
from tests.conftest import REPO, broker_is_redis, drain_messages, queue_length

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.usefixtures("broker")]

WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


# The broker watch exists for a Redis broker only (eventbus/operations/brokerwatch.py): RabbitMQ keeps
# durable queues across restarts, and what a RabbitMQ node may lose is sent again by the
# reconciler's time-based pass, which runs on RabbitMQ here
# (test_a_delivery_the_broker_lost_is_sent_again_once_it_is_old_enough); that the watch
# stands aside there is test_rabbitmq_is_not_watched_and_the_watch_stands_aside.
only_a_redis_broker_is_watched = pytest.mark.skipif(
    not broker_is_redis(),
    reason="the broker watch exists for a Redis broker only; on RabbitMQ a lost delivery is sent again by "
    "the reconciler's time-based pass (tested here on RabbitMQ too), and the watch stands aside (tested)",
)


def publish_signups(count: int, first: int = 1) -> list[str]:
    ids = []
    for user_id in range(first, first + count):
        with transaction.atomic():
            ids.append(str(publish(UserSignedUp(user_id=user_id, channel="web"), aggregate=f"user:{user_id}").id))
    return ids


def lose_every_message() -> None:
    """What a broker that lost its queues leaves: nothing waiting."""
    drain_messages(queues.NOTIFICATIONS)
    drain_messages(queues.ANALYTICS)


def age(ids: list[str], seconds: float) -> None:
    """Make these events' messages ``seconds`` old."""
    OutboxEvent.objects.filter(id__in=ids).update(last_sent_at=timezone.now() - timedelta(seconds=seconds))


def processed(event_id: str, subscriber: str) -> None:
    event = OutboxEvent.objects.get(id=event_id)
    ProcessedEvent.objects.create(
        event_id=event_id, subscriber=subscriber, event_type=event.type, aggregate=event.aggregate, sequence=1
    )


def test_dispatch_records_which_subscribers_the_broker_took_the_event_for() -> None:
    [event_id] = publish_signups(1)

    row = OutboxEvent.objects.get(id=event_id)
    assert row.status == OutboxEvent.Status.DISPATCHED
    assert sorted(row.sent_to) == [ANALYTICS, WELCOME]
    assert row.last_sent_at is not None and row.settled_at is None


def test_a_delivery_the_broker_lost_is_sent_again_once_it_is_old_enough(settings: Any) -> None:
    # given: two events whose messages the broker lost; one subscriber did handle the first
    first, second = publish_signups(2)
    lose_every_message()
    processed(first, ANALYTICS)

    # when: the reconciler runs before EVENTBUS_REDELIVER_AFTER has passed
    early = reconcile()
    # then: nothing is due yet
    assert (early.scanned, early.redelivered) == (0, 0)
    assert queue_length(queues.NOTIFICATIONS) == 0

    # when: it runs once they are older than that
    age([first, second], settings.EVENTBUS_REDELIVER_AFTER + 1)
    result = reconcile()

    # then: exactly the deliveries without an end go out again, each to its own queue
    assert result.redelivered == 3 and result.complete
    welcome = drain_messages(queues.NOTIFICATIONS)
    analytics = drain_messages(queues.ANALYTICS)
    assert sorted(m.headers["argsrepr"].count(first) + m.headers["argsrepr"].count(second) for m in welcome) == [1, 1]
    assert [second in m.headers["argsrepr"] for m in analytics] == [True]
    steps = DeliveryStep.objects.filter(step=DeliveryStep.Step.REDELIVERED)
    assert sorted((str(s.event_id), s.subscriber) for s in steps) == sorted(
        [(first, WELCOME), (second, WELCOME), (second, ANALYTICS)]
    )
    assert counters.read(counters.REDELIVERED) == {WELCOME: 2, ANALYTICS: 1}
    assert OutboxEvent.objects.get(id=second).redeliveries == 1

    # and: a redelivery counts as a fresh send; the next run leaves it alone
    again = reconcile()
    assert (again.scanned, again.redelivered) == (0, 0)


def test_every_ended_delivery_settles_its_event_and_it_is_never_read_again(settings: Any) -> None:
    # given: one event handled by both subscribers, one dead-lettered for the email, one shed for analytics
    done, dead, shed = publish_signups(3)
    for subscriber in (WELCOME, ANALYTICS):
        processed(done, subscriber)
    processed(dead, ANALYTICS)
    DeadLetter.objects.create(
        id=dead, kind="permanent", event_id=dead, subscriber=WELCOME, last_failed_at=timezone.now()
    )
    processed(shed, WELCOME)
    ProcessedEvent.objects.create(
        event_id=shed, subscriber=ANALYTICS, outcome="shed", event_type="user.signed_up", aggregate="a", sequence=1
    )
    age([done, dead, shed], settings.EVENTBUS_REDELIVER_AFTER + 1)

    result = reconcile()

    assert (result.scanned, result.settled, result.redelivered) == (3, 3, 0)
    assert OutboxEvent.objects.filter(settled_at__isnull=False).count() == 3
    assert reconcile().scanned == 0


def test_a_delivery_still_being_retried_is_not_sent_again(settings: Any) -> None:
    [event_id] = publish_signups(1)
    lose_every_message()
    processed(event_id, ANALYTICS)
    age([event_id], settings.EVENTBUS_REDELIVER_AFTER + 1)
    # A retry scheduled a minute ago: the delivery is alive, its message in a countdown.
    step = DeliveryStep.objects.create(event_id=event_id, subscriber=WELCOME, step=DeliveryStep.Step.RETRIED)
    DeliveryStep.objects.filter(pk=step.pk).update(at=timezone.now() - timedelta(seconds=60))

    result = reconcile()

    assert (result.scanned, result.settled, result.redelivered) == (1, 0, 0)
    assert queue_length(queues.NOTIFICATIONS) == 0


def test_the_dry_run_lists_what_it_would_send_and_changes_nothing(settings: Any) -> None:
    [event_id] = publish_signups(1)
    lose_every_message()
    age([event_id], settings.EVENTBUS_REDELIVER_AFTER + 1)
    out = io.StringIO()

    call_command("reconcile_deliveries", "--dry-run", stdout=out)

    text = out.getvalue()
    assert f"would send again: user.signed_up {event_id}" in text
    assert "2 deliveries of 1 events without an end" in text
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 0
    assert not DeliveryStep.objects.filter(step=DeliveryStep.Step.REDELIVERED).exists()
    assert OutboxEvent.objects.get(id=event_id).redeliveries == 0

    # and the real run sends what the dry run listed
    out = io.StringIO()
    call_command("reconcile_deliveries", stdout=out)
    assert f"sent again: user.signed_up {event_id}" in out.getvalue()
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 1


def test_work_is_done_in_bounded_batches_oldest_first(settings: Any) -> None:
    ids = publish_signups(25)
    lose_every_message()
    for rank, event_id in enumerate(ids):
        age([event_id], settings.EVENTBUS_REDELIVER_AFTER + 100 - rank)
    batches: list[int] = []

    # a run with no time left starts no batch, and says that more is due
    stopped = reconcile(max_seconds=0)
    assert (stopped.scanned, stopped.complete) == (0, False)

    result = reconcile(batch=10, progress=batches.append)

    assert batches == [10, 10, 5]
    assert [m.event_id for m in result.missing] == ids
    assert result.redelivered == 50


def test_two_reconcilers_at_once_send_each_lost_delivery_once(settings: Any) -> None:
    ids = publish_signups(40)
    lose_every_message()
    age(ids, settings.EVENTBUS_REDELIVER_AFTER + 1)
    start = threading.Barrier(2)
    sent: list[int] = []

    def run() -> None:
        try:
            start.wait()
            sent.append(reconcile(batch=5).redelivered)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(sent) == 80, sent
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 40
    assert set(OutboxEvent.objects.values_list("redeliveries", flat=True)) == {1}


@only_a_redis_broker_is_watched
def test_a_broker_that_lost_its_data_is_detected_and_what_it_held_is_sent_again_at_once(settings: Any) -> None:
    # given: the marker written while the broker was intact, then events sent a moment ago
    assert brokerwatch.check() is None
    assert brokerwatch.check() is None  # rotated, still intact
    ids = publish_signups(3)

    # when: the broker loses everything (a FLUSHDB of this run's keys)
    lose_every_message()
    redis_client().delete(brokerwatch.marker_key())
    loss = brokerwatch.check()

    # then: the loss is recorded once, and the young deliveries go out at once
    assert loss is not None and "no longer holds the marker" in loss.reason
    assert brokerwatch.check() is None
    result = reconcile()
    assert result.redelivered == 6 and result.complete
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 3
    # held back until every task running at the loss has ended (the longest time limit)
    [welcome, *_] = drain_messages(queues.NOTIFICATIONS)
    held_until = datetime.fromisoformat(welcome.headers["eta"])
    assert held_until > timezone.now() + timedelta(seconds=settings.EVENTBUS_TIME_LIMIT - 10)
    loss.refresh_from_db()
    assert loss.recovered_at is not None and loss.redelivered == 6
    assert BrokerLoss.objects.count() == 1
    assert {str(i) for i in OutboxEvent.objects.filter(redeliveries=1).values_list("id", flat=True)} == set(ids)

    # and: once recovered, young events wait for EVENTBUS_REDELIVER_AFTER again
    publish_signups(1, first=10)
    lose_every_message()
    assert reconcile().redelivered == 0


@only_a_redis_broker_is_watched
def test_a_broker_restored_from_an_old_snapshot_is_a_loss_too() -> None:
    assert brokerwatch.check() is None
    old = redis_client().get(brokerwatch.marker_key())
    assert brokerwatch.check() is None
    # The token of an earlier check, as a replica or a snapshot that missed the last writes holds it.
    redis_client().set(brokerwatch.marker_key(), old)

    loss = brokerwatch.check()

    assert loss is not None and "holds an older one" in loss.reason


def test_a_subscriber_time_limit_beyond_the_redelivery_age_is_named(settings: Any) -> None:
    settings.EVENTBUS_REDELIVER_AFTER = 30.0
    found = safety.problems(celery_app.conf)
    assert any("EVENTBUS_REDELIVER_AFTER" in p and WELCOME in p for p in found), found


def test_a_redelivery_age_below_the_time_limit_stops_the_process_at_start() -> None:
    env = {**os.environ, "EVENTBUS_REDELIVER_AFTER": "60", "EVENTBUS_TIME_LIMIT": "90"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "EVENTBUS_REDELIVER_AFTER (60s) must exceed EVENTBUS_TIME_LIMIT (90s)" in result.stderr


@only_a_redis_broker_is_watched
def test_a_loss_and_the_reconcilers_backlog_show_in_metrics_ops_and_the_status_command(
    admin_client: Any, settings: Any
) -> None:
    # given: one loss detected, and one event overdue
    brokerwatch.check()
    [event_id] = publish_signups(1)
    redis_client().delete(brokerwatch.marker_key())
    assert brokerwatch.check() is not None
    age([event_id], settings.EVENTBUS_REDELIVER_AFTER + 1)

    metrics = admin_client.get("/metrics").content.decode()
    assert "eventbus_broker_losses_total 1.0" in metrics
    assert "eventbus_deliveries_overdue 1.0" in metrics
    assert "eventbus_deliveries_unsettled 1.0" in metrics
    page = admin_client.get("/ops/").content.decode()
    assert "Broker data losses detected: <strong>1</strong>" in page
    assert "recovery under way" in page
    out = io.StringIO()
    call_command("eventbus_status", stdout=out)
    assert "sent, not yet settled 1; overdue 1; broker data losses 1" in out.getvalue()

    # when: the reconciler has been through everything sent before the loss
    reconcile()

    # then
    metrics = admin_client.get("/metrics").content.decode()
    assert 'eventbus_redelivered_total{subscriber="notifications.send_welcome_email"} 1.0' in metrics
    assert "eventbus_deliveries_overdue 0.0" in metrics
    assert "recovered at" in admin_client.get("/ops/").content.decode()


@only_a_redis_broker_is_watched
def test_a_second_loss_during_the_recovery_of_the_first_is_covered_by_one_pass() -> None:
    brokerwatch.check()
    publish_signups(2)
    redis_client().delete(brokerwatch.marker_key())
    first = brokerwatch.check()
    lose_every_message()
    redis_client().delete(brokerwatch.marker_key())
    second = brokerwatch.check()
    assert first is not None and second is not None and first.pk != second.pk

    result = reconcile()

    assert result.redelivered == 4 and result.complete
    assert not BrokerLoss.objects.filter(recovered_at__isnull=True).exists()


@pytest.mark.skipif(broker_is_redis(), reason="on a Redis broker the watch runs: the tests above")
def test_rabbitmq_is_not_watched_and_the_watch_stands_aside() -> None:
    # given: RabbitMQ as the broker
    assert not brokerwatch.watched()

    # when: beat's broker watch runs
    loss = brokerwatch.check()

    # then: it neither reports a loss nor keeps a marker, so the reconciler keeps its time-based pass
    assert loss is None
    assert not BrokerMarker.objects.exists() and not BrokerLoss.objects.exists()


@only_a_redis_broker_is_watched
def test_a_database_lost_between_the_two_halves_of_the_marker_swap_is_no_broker_loss() -> None:
    # given: the marker in both places
    assert brokerwatch.check() is None

    # when: Redis takes the new token and the database goes away before it does (a restart mid-check;
    # Django's hook around every statement fails that one UPDATE as a closed connection would)
    def database_gone(execute: Any, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE") and "eventbus_brokermarker" in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, *args)

    with connection.execute_wrapper(database_gone), pytest.raises(OperationalError):
        brokerwatch.check()

    # then: the next check finds the broker as it was, not a broker that lost its data
    assert brokerwatch.check() is None
    assert not BrokerLoss.objects.exists()
