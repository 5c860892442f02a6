"""The batching analytics subscriber: many events per transaction, the same guarantees as one by one."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.deadletters import Kind
from eventbus.delivery import batch as batching
from eventbus.delivery import buffer
from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from project import queues
from signups.events import UserEmailVerified, UserSignedUp
from tests.conftest import purge_broker, queue_length, running_worker, wait_for, worker_env, worker_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ANALYTICS = "analytics.record_event"


def pending_events(count: int, first_user: int = 1) -> list[str]:
    """``count`` sign-up events in the outbox, not yet sent (as after a broker outage)."""
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        return [
            str(publish(UserSignedUp(user_id=n, channel="web"), aggregate=f"user:{n}").id)
            for n in range(first_user, first_user + count)
        ]


def test_a_backlog_is_recorded_in_batches_once_each_by_a_prefork_worker(broker: None) -> None:
    # given: 600 events waiting in the analytics queue
    ids = pending_events(600)
    relay(grace=0)
    assert queue_length(queues.ANALYTICS) == 600

    # when: one prefork worker with two processes consumes them, with room to
    # buffer a batch (by default a worker prefetches 1 message per process)
    with worker_process(queues.ANALYTICS, name="batch", env=worker_env(CELERY_WORKER_PREFETCH_MULTIPLIER="100")):
        wait_for(lambda: AnalyticsEvent.objects.count() == 600, timeout=60, what="600 rows")
        wait_for(lambda: queue_length(queues.ANALYTICS) == 0, what="the queue drained")
        # a batch is counted after its commit (pipeline.finish): stop the worker only then
        wait_for(lambda: counters.read(counters.BATCHED).get(ANALYTICS, 0) == 600, what="every batch counted")

    # then: one row and one ledger entry per event, written in far fewer transactions than events
    assert sorted(str(e) for e in AnalyticsEvent.objects.values_list("event_id", flat=True)) == sorted(ids)
    assert ProcessedEvent.objects.filter(subscriber=ANALYTICS).count() == 600
    batches = counters.read(counters.BATCHES).get(ANALYTICS, 0)
    batched = counters.read(counters.BATCHED).get(ANALYTICS, 0)
    assert batched == 600, "every event took the bulk path"
    assert 3 <= batches <= 200, f"{batches} transactions for 600 events"
    assert not counters.read(counters.DUPLICATES).get(ANALYTICS)
    assert not DeadLetter.objects.exists()


def test_batches_grow_past_the_default_prefetch_limit_beside_emails_that_keep_it(
    broker: None, smtp_sink: SmtpSink
) -> None:
    # given: 300 sign-ups' events waiting on both subscriber queues, and a
    # worker on both with the project's default prefetch (1 per process, 2 in all)
    users = [
        get_user_model().objects.create_user(username=f"roomy{n}@example.com", email=f"roomy{n}@example.com")
        for n in range(300)
    ]
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        for user in users:
            publish(UserSignedUp(user_id=user.pk, channel="web"), aggregate=f"user:{user.pk}")
    relay(grace=0)
    assert queue_length(queues.ANALYTICS) == queue_length(queues.NOTIFICATIONS) == 300

    # when
    env = worker_env(EMAIL_RATE_LIMIT="100000/s")  # the provider's limit is not what this test is about
    with worker_process(queues.NOTIFICATIONS, queues.ANALYTICS, name="roomy", env=env) as worker:
        wait_for(lambda: AnalyticsEvent.objects.count() == 300, timeout=90, what="300 analytics rows")
        wait_for(lambda: len(smtp_sink.messages) == 300, timeout=90, what="300 emails")
        wait_for(lambda: counters.read(counters.BATCHED).get(ANALYTICS, 0) == 300, what="every batch counted")
        log = Path(worker.log_path).read_text()

    # then: the analytics events went in batches larger than the prefetch limit of 2 (each buffered
    # message raised the limit by one) ...
    batches = counters.read(counters.BATCHES).get(ANALYTICS, 0)
    assert batches <= 100, f"{batches} transactions for 300 events: batches no larger than the prefetch limit"
    assert max(int(size) for size in re.findall(r"recorded in a batch of (\d+)", log)) > 2
    # ... while the emails, one task each, were done once each, as ever
    assert ProcessedEvent.objects.filter(subscriber="notifications.send_welcome_email").count() == 300
    assert len({m.message_id for m in smtp_sink.messages}) == 300
    assert not DeadLetter.objects.exists()


def test_poison_duplicates_and_gaps_in_a_batch_go_their_own_way(broker: None) -> None:
    # given: an event already recorded
    purge_broker()
    task = registry.get(ANALYTICS).task
    fresh, done = pending_events(2, first_user=10)
    done_wire = OutboxEvent.objects.get(id=done).to_wire()
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        verified = publish(UserEmailVerified(user_id=20), aggregate="user:10")  # after sign-up 10: in order
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        publish(UserSignedUp(user_id=30, channel="web"), aggregate="user:30")
        gapped = publish(UserEmailVerified(user_id=30), aggregate="user:30")
    broken = {"id": str(uuid.uuid4()), "type": "user.signed_up", "version": 99}
    with running_worker(queues.ANALYTICS, queues.DEAD_LETTER, concurrency=2):
        task.apply_async(args=(done_wire,), queue=queues.ANALYTICS)
        wait_for(lambda: AnalyticsEvent.objects.filter(event_id=done).exists(), what="the earlier delivery")
        # a batch is counted after its commit (pipeline.finish): stop the worker only then
        wait_for(lambda: counters.read(counters.BATCHED).get(ANALYTICS) == 1, what="the earlier batch counted")
    batches_before = counters.read(counters.BATCHES).get(ANALYTICS, 0)

    # and: waiting together in the queue, so that one worker fetches them as one batch: a new
    # event, the one already recorded, a broken one, a verification whose sign-up was never
    # recorded (a gap), and the verification of the new event's sign-up (in order after it)
    sent = {
        task.apply_async(args=(wire,), queue=queues.ANALYTICS).id
        for wire in (
            OutboxEvent.objects.get(id=fresh).to_wire(),
            done_wire,
            broken,
            OutboxEvent.objects.get(id=gapped.id).to_wire(),
            OutboxEvent.objects.get(id=verified.id).to_wire(),
        )
    }
    assert queue_length(queues.ANALYTICS) == 5

    # when: a worker takes them (its pool runs each batch in this process: the test sees what each held)
    batches: list[set[str]] = []
    run_batch = batching.run_batch

    def seen(task_name: str, items: list[batching.Item]) -> list[str]:
        batches.append({item.task_id for item in items})
        return run_batch(task_name, items)

    with mock.patch.object(buffer, "run_batch", seen), running_worker(queues.ANALYTICS, queues.DEAD_LETTER):
        # then: the new one and the in-order verification are recorded once, the
        # duplicate skipped, the broken one dead-lettered, the gap waits
        wait_for(lambda: DeadLetter.objects.filter(kind=Kind.POISON).exists(), what="the poison dead letter")
        wait_for(
            lambda: AnalyticsEvent.objects.filter(event_id__in=[fresh, verified.id]).count() == 2,
            what="the new events recorded",
        )
        wait_for(lambda: counters.read(counters.ORDER_WAITS).get(ANALYTICS), what="the gap deferred")
        wait_for(lambda: counters.read(counters.DUPLICATES).get(ANALYTICS) == 1, what="the duplicate skipped")
    assert AnalyticsEvent.objects.filter(event_id=done).count() == 1
    assert not AnalyticsEvent.objects.filter(event_id=gapped.id).exists()
    assert DeadLetter.objects.get().body == broken
    # and: they were one batch
    assert batches and batches[0] == sent, f"batches held {batches}, not the five at once"
    # ... whose two events of one aggregate went one by one (each must see its predecessor), not in bulk
    assert counters.read(counters.BATCHES).get(ANALYTICS, 0) == batches_before


def test_an_effect_that_fails_in_bulk_goes_its_own_way_and_the_others_are_recorded(broker: None) -> None:
    # given: an event whose row already exists without a ledger entry (the
    # unique event id makes the bulk INSERT fail), beside two new events
    purge_broker()
    clash, *others = pending_events(3, first_user=40)
    AnalyticsEvent.objects.create(event_id=clash, type="user.signed_up", occurred_at="2026-01-01T00:00:00Z")
    task = registry.get(ANALYTICS).task

    # when
    with running_worker(queues.ANALYTICS, queues.DEAD_LETTER, concurrency=2):
        for event_id in (clash, *others):
            task.apply_async(args=(OutboxEvent.objects.get(id=event_id).to_wire(),), queue=queues.ANALYTICS)
        wait_for(
            lambda: ProcessedEvent.objects.filter(subscriber=ANALYTICS, event_id__in=others).count() == 2,
            what="the two new events recorded one by one",
        )
        letter = wait_for(lambda: DeadLetter.objects.filter(event_id=clash).first(), what="the clash dead-lettered")

    # then: the others did not wait for the one that fails, which is a permanent failure of its own
    assert letter.kind == Kind.PERMANENT and "IntegrityError" in letter.exception_type
    assert not ProcessedEvent.objects.filter(event_id=clash).exists()
    assert AnalyticsEvent.objects.filter(event_id=clash).count() == 1
