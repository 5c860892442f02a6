"""Two deliveries of one event at the same moment, proven to overlap: the effect still happens once.

The duplicate tests elsewhere deliver copies one after another, where the
ledger alone keeps them apart. Here the second copy arrives while the first
is provably inside its effect, so what is tested is what guards that moment:
the effect lock in Redis for an email (eventbus/delivery/guards/effectlock.py), the unique
indexes for a database effect (eventbus/delivery/ledger.py, analytics' event id).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from analytics.models import AnalyticsEvent
from eventbus import redis as eventbus_redis
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.operations.reconcile import reconcile
from project import queues
from project.celery import app as celery_app
from tests.conftest import wait_for
from tests.faults.harness import ANALYTICS, WELCOME, sign_up_many, welcome_id
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The first delivery is held inside its effect for as long as the test needs to
# bring the second one in, at most HOLD seconds. Every bound of the workers is
# raised above it, so that holding is not itself a fault: the SMTP client's
# timeout, the task's time limits (the effect lock lasts the hard limit), and
# the visibility timeout (settings refuse limits not below it).
HOLD = 15.0
SLOW_ENV = {
    "EMAIL_TIMEOUT": str(int(HOLD * 2)),
    "EVENTBUS_SOFT_TIME_LIMIT": str(HOLD * 2),
    "EVENTBUS_TIME_LIMIT": str(HOLD * 2 + 5),
    "CELERY_VISIBILITY_TIMEOUT": str(int(HOLD * 4)),
}
# The redelivery age of the reconciler the test runs: short, so that the held send outlives it.
# (Workers keep the default: settings refuse an age not above their time limit.)
REDELIVER_AFTER = 1.0
# Declared queues (Celery refuses others) that nothing else uses in these tests, one worker
# each: each copy reaches the process the test meant it for. A task runs whatever queue its
# message came from, and a delivery that waits is scheduled again on that same queue.
FIRST = queues.TELEMETRY
SECOND = queues.EVENTBUS


def test_a_second_email_delivery_during_the_first_send_waits_on_the_effect_lock(
    workers: Workers, sink: ProviderSink
) -> None:
    # given: a provider that holds its reply to DATA, and two workers of the email queue
    sink.hold_data(at_most=HOLD)
    first = workers.spawn("first", queues.NOTIFICATIONS, concurrency=1, **SLOW_ENV)
    second = workers.spawn("second", SECOND, concurrency=1, **SLOW_ENV)
    rest = workers.spawn("rest", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1, **SLOW_ENV)
    workers.wait_ready(first, second, rest)

    # when: a sign-up's welcome email is inside its send (the provider has its DATA, not yet answered)
    assert [r.status_code for r in sign_up_many(1, Client())] == [302]
    row = OutboxEvent.objects.get(type="user.signed_up")
    message_id = welcome_id(row.id)
    wait_for(lambda: sink.data_begun(message_id), timeout=HOLD, what="the first send's DATA at the provider")
    # and: a second copy of the same message is published, to the second worker
    second_sent = time.monotonic()
    celery_app.send_task(WELCOME, args=(row.to_wire(),), queue=SECOND, routing_key=SECOND)

    # then: the second delivery found the effect lock taken, while the first was still inside its send
    _wait_for_the_copy(sink, message_id, "the second delivery")
    [data_begun] = sink.data_begun(message_id)
    assert data_begun < second_sent
    print(f"first DATA in at {data_begun:.3f}, second copy sent at {second_sent:.3f}, first DATA still unanswered")

    # when: the provider answers
    sink.answer_data()

    # then: the waiting copy came back, found the ledger entry and was counted a duplicate
    wait_for(
        lambda: counters.read(counters.DUPLICATES).get(WELCOME) == 1, timeout=HOLD, what="the second copy a duplicate"
    )
    waits = counters.read(counters.EFFECT_WAITS)[WELCOME]
    print(f"effect waits: {waits}; DATA received {len(sink.data_begun(message_id))} time(s)")
    assert len(sink.data_begun(message_id)) == 1
    wait_for(lambda: len(sink.messages) == 1, timeout=HOLD, what="the one email stored")
    check_invariant(sink, "concurrent email duplicate", committed=1)


def test_a_second_analytics_delivery_during_the_first_transaction_waits_on_the_unique_index(
    workers: Workers, sink: ProviderSink
) -> None:
    """Two copies under way at once, the test holding the first inside its transaction.

    On PostgreSQL the overlap is seen in the database: the first waits on the ledger row the
    test inserted, the second on the first's uncommitted analytics row (unique event id).
    SQLite lets one writer in at a time and shows nobody who waits: there, both deliveries
    are seen started and not ended while the test holds the writer lock, so no ledger row
    can have committed; the second meets the first's rows at its ledger check or at the index.
    """
    # given: a sign-up whose email went out, and two idle workers with a queue each; the
    # sign-up's own analytics message stays in its queue, which nobody consumes here: the
    # test sends the two copies itself, one to each worker.
    mail = workers.spawn("mail", queues.NOTIFICATIONS, queues.DEAD_LETTER, concurrency=1, **SLOW_ENV)
    first = workers.spawn("first", FIRST, concurrency=1, **SLOW_ENV)
    second = workers.spawn("second", SECOND, concurrency=1, **SLOW_ENV)
    workers.wait_ready(mail, first, second)
    assert [r.status_code for r in sign_up_many(1, Client())] == [302]
    row = OutboxEvent.objects.get(type="user.signed_up")
    wait_for(lambda: ProcessedEvent.objects.filter(subscriber=WELCOME).exists(), timeout=HOLD, what="the email sent")
    postgres = connection.vendor == "postgresql"

    with transaction.atomic():
        # and: the test holds the database where the first delivery will need it. On SQLite
        # the IMMEDIATE transaction takes the writer lock at its start; on PostgreSQL the
        # uncommitted ledger row holds the first delivery's ledger INSERT, after its own row.
        ProcessedEvent.objects.create(
            event_id=row.id, subscriber=ANALYTICS, event_type=row.type, aggregate=row.aggregate, sequence=row.sequence
        )

        # when: a copy of the analytics message reaches each worker, one after the other
        one = celery_app.send_task(ANALYTICS, args=(row.to_wire(),), queue=FIRST, routing_key=FIRST).id
        wait_for(lambda: _under_way(one), timeout=HOLD, what="the first analytics delivery started")
        if postgres:
            wait_for(lambda: _waiting_on_locks() == 1, timeout=HOLD, what="the first delivery waiting on a lock")
        two = celery_app.send_task(ANALYTICS, args=(row.to_wire(),), queue=SECOND, routing_key=SECOND).id

        # then: both are under way at once, neither finished, no row written
        wait_for(lambda: _under_way(two), timeout=HOLD, what="the second analytics delivery started")
        if postgres:
            wait_for(lambda: _waiting_on_locks() == 2, timeout=HOLD, what="both deliveries waiting on a lock")
        assert _under_way(one), "the first delivery ended before the second began: they did not overlap"
        print(f"both deliveries under way; waiting on locks: {_waiting_on_locks() if postgres else 'SQLite writer'}")

        # when: the test lets go (its ledger row rolled back)
        transaction.set_rollback(True)

    # then: one analytics row, and the other delivery was turned away as a duplicate
    wait_for(
        lambda: counters.read(counters.DUPLICATES).get(ANALYTICS) == 1, timeout=HOLD, what="the second copy a duplicate"
    )
    wait_for(lambda: not _under_way(one) and not _under_way(two), timeout=HOLD, what="both deliveries ended")
    assert AnalyticsEvent.objects.filter(event_id=row.id).count() == 1
    assert ProcessedEvent.objects.filter(event_id=row.id, subscriber=ANALYTICS).count() == 1
    check_invariant(sink, "concurrent analytics duplicate", committed=1)


def _wait_for_the_copy(sink: ProviderSink, message_id: str, copy: str) -> None:
    """Until the copy waits on the effect lock, or sends the email a second time (the lock let it through)."""
    wait_for(
        lambda: counters.read(counters.EFFECT_WAITS).get(WELCOME, 0) > 0 or len(sink.data_begun(message_id)) > 1,
        timeout=HOLD,
        what=f"{copy} waiting on the effect lock, or sending",
    )
    assert len(sink.data_begun(message_id)) == 1, f"{copy} sent the email a second time, during the first send"
    assert counters.read(counters.EFFECT_WAITS).get(WELCOME, 0) > 0
    assert not sink.data_answered(message_id), f"the first send had ended: {copy} did not meet it"


def _under_way(task_id: str) -> bool:
    """The delivery of ``task_id`` has started and not ended (eventbus/delivery/guards/attempts.py counts each start
    before the ledger is asked, and clears the count when the delivery ends)."""
    return bool(eventbus_redis.client().exists(eventbus_redis.key("deliveries", task_id, "0")))


def _waiting_on_locks() -> int:
    """Other sessions of this database waiting for a lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        # Inside a transaction, PostgreSQL serves the activity view from one snapshot unless told to drop it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_a_send_still_under_way_when_the_reconciler_sends_it_again_has_one_effect(
    workers: Workers, sink: ProviderSink, settings: Any
) -> None:
    """The reconciler sends again a delivery with no end ``EVENTBUS_REDELIVER_AFTER`` after it was sent
    (eventbus/operations/reconcile.py). One that is still running by then (it waited in its queue, or its provider
    is slow) meets its own redelivered copy: the copy waits on the effect lock, then finds it done."""
    # given: a provider that holds its reply to DATA; two workers compete on the email queue
    sink.hold_data(at_most=HOLD)
    first = workers.spawn("first", queues.NOTIFICATIONS, concurrency=1, **SLOW_ENV)
    second = workers.spawn("second", queues.NOTIFICATIONS, concurrency=1, **SLOW_ENV)
    rest = workers.spawn("rest", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1, **SLOW_ENV)
    workers.wait_ready(first, second, rest)

    # when: a sign-up's welcome email is inside its send, its analytics delivery done
    assert [r.status_code for r in sign_up_many(1, Client())] == [302]
    row = OutboxEvent.objects.get(type="user.signed_up")
    message_id = welcome_id(row.id)
    wait_for(lambda: sink.data_begun(message_id), timeout=HOLD, what="the send's DATA at the provider")
    wait_for(lambda: AnalyticsEvent.objects.filter(event_id=row.id).exists(), timeout=HOLD, what="analytics done")
    # and: the send outlives the redelivery age (short here, for the test process's reconciler)
    settings.EVENTBUS_REDELIVER_AFTER = REDELIVER_AFTER
    wait_for(lambda: _sent_longer_ago_than(row.id, REDELIVER_AFTER), timeout=HOLD, what="the delivery due")
    result = reconcile()

    # then: the email delivery, and only it, was sent again, while the first was still in its send
    assert result.redelivered == 1 and [m.subscribers for m in result.missing] == [(WELCOME,)]
    _wait_for_the_copy(sink, message_id, "the redelivered copy")

    # when: the provider answers
    sink.answer_data()

    # then: the copy was a duplicate; one email
    wait_for(lambda: counters.read(counters.DUPLICATES).get(WELCOME) == 1, timeout=HOLD, what="the copy a duplicate")
    assert len(sink.data_begun(message_id)) == 1
    wait_for(lambda: len(sink.messages) == 1, timeout=HOLD, what="the one email stored")
    tally = check_invariant(sink, "redelivered while running", committed=1)
    assert tally.redelivered == 1


def _sent_longer_ago_than(event_id: object, seconds: float) -> bool:
    sent = OutboxEvent.objects.get(pk=event_id).last_sent_at
    return sent is not None and (timezone.now() - sent).total_seconds() > seconds
