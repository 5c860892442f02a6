"""The broker loses its data: every committed sign-up still gets one email and one analytics row.

Redis restarting without persistence, FLUSHDB, a worker in the middle of a
task when it happens, and a backlog merely older than EVENTBUS_REDELIVER_AFTER:
the outbox knows whom each event was sent to, the ledger which deliveries
ended, and the reconciler sends again the rest (eventbus/operations/reconcile.py,
eventbus/operations/brokerwatch.py), run here by a real beat.
"""

from __future__ import annotations

import time

import pytest
from django.test import Client

from eventbus import redis as eventbus_redis
from eventbus.models import BrokerLoss
from eventbus.observability import counters
from eventbus.operations import brokerwatch
from eventbus.operations.reconcile import reconcile
from project import queues
from tests.conftest import wait_for
from tests.factories import sign_up_via_client
from tests.faults.harness import ANALYTICS, WELCOME, queue_length, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIGNUPS = 20
# Beat checks the broker's marker this often in these tests (EVENTBUS_BROKER_CHECK_INTERVAL).
CHECK_EVERY = "1"


def start_pipeline(workers: Workers) -> None:
    """Both subscribers' pools, the eventbus pool (relay, reconciler, broker watch) and beat."""
    mail = workers.spawn("loss-mail", queues.NOTIFICATIONS)
    analytics = workers.spawn("loss-analytics", queues.ANALYTICS, queues.DEAD_LETTER)
    bus = workers.spawn("loss-eventbus", queues.EVENTBUS, concurrency=1)
    workers.wait_ready(mail, analytics, bus)
    workers.start_beat(EVENTBUS_BROKER_CHECK_INTERVAL=CHECK_EVERY)


@pytest.mark.parametrize("loss", ["restart without persistence", "FLUSHDB"])
def test_messages_waiting_in_a_broker_that_loses_its_data_are_delivered_once(
    loss: str, workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    # given: the broker is marked intact, then sign-ups whose messages wait (no worker runs)
    assert brokerwatch.check() is None
    assert [r.status_code for r in sign_up_many(SIGNUPS)] == [302] * SIGNUPS
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == SIGNUPS

    # when: the broker loses everything
    if loss == "FLUSHDB":
        # This test's own redis-server (the private_redis fixture), never the machine's shared one.
        eventbus_redis.client().flushdb()
    else:
        private_redis.restart_empty()
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 0
    lost_at = time.monotonic()

    # and: the system runs
    start_pipeline(workers)

    # then: beat's watch tells the loss, the reconciler sends what was lost, each effect happens once
    wait_until_delivered(sink, timeout=60)
    print(f"{loss}: everything delivered {time.monotonic() - lost_at:.1f}s after the loss (workers' start included)")
    detected = BrokerLoss.objects.get()
    assert detected.recovered_at is not None and detected.redelivered == 2 * SIGNUPS
    tally = check_invariant(sink, f"broker data loss, {loss}", committed=SIGNUPS)
    assert tally.redelivered == 2 * SIGNUPS


def test_a_worker_in_the_middle_of_a_task_when_redis_restarts_empty_goes_on_and_nothing_is_lost(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    # given: the running system, marked by beat's first watch, and email queued behind a slow provider
    start_pipeline(workers)
    wait_for(lambda: brokerwatch.BrokerMarker.objects.exists(), timeout=15, what="beat's first broker check")
    client = Client()
    assert [r.status_code for r in sign_up_many(5, client)] == [302] * 5
    wait_until_delivered(sink, timeout=30)
    sink.latency = 1.5
    assert [r.status_code for r in sign_up_many(SIGNUPS, client)] == [302] * SIGNUPS
    wait_for(lambda: sink.sending_from(at_least=0.3), timeout=15, interval=0.01, what="a send in progress")
    waiting = queue_length(queues.NOTIFICATIONS)

    # when: Redis dies and comes back empty while an email is being sent
    private_redis.restart_empty()
    print(f"Redis restarted empty with a send in progress and {waiting} emails queued")
    sink.latency = 0.0

    # then: the workers reconnect by themselves, the loss is found, what it held is sent again once
    wait_until_delivered(sink, timeout=90)
    mail, analytics = workers.started[0], workers.started[1]
    for worker in (mail, analytics):
        assert worker.alive(), f"{worker.name} exited instead of reconnecting:\n{worker.log()[-3000:]}"
    assert "Connection to broker lost" in mail.log()
    assert BrokerLoss.objects.count() == 1
    tally = check_invariant(sink, "broker data loss, worker mid-send", committed=5 + SIGNUPS)
    assert tally.redelivered >= waiting


def test_a_slow_backlog_older_than_the_redelivery_age_is_sent_again_and_applied_once(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis, settings: object
) -> None:
    # given: sign-ups whose messages wait longer than EVENTBUS_REDELIVER_AFTER (no worker runs)
    settings.EVENTBUS_REDELIVER_AFTER = 5.0  # type: ignore[attr-defined]  # above the fault suite's 4 s time limit
    assert brokerwatch.check() is None
    assert [r.status_code for r in sign_up_many(SIGNUPS)] == [302] * SIGNUPS
    assert reconcile().redelivered == 0
    time.sleep(5.5)

    # when: the reconciler runs (the broker lost nothing: the messages are slow, not gone)
    result = reconcile()

    # then: it sends them again, and the queues hold two of each
    assert result.redelivered == 2 * SIGNUPS
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 2 * SIGNUPS

    # when: the workers come
    mail = workers.spawn("backlog-mail", queues.NOTIFICATIONS)
    analytics = workers.spawn("backlog-analytics", queues.ANALYTICS, queues.DEAD_LETTER)
    workers.wait_ready(mail, analytics)

    # then: each effect happens once; the second copy of each is a counted no-op
    wait_until_delivered(sink, timeout=60)
    wait_for(lambda: queue_length(queues.NOTIFICATIONS) + queue_length(queues.ANALYTICS) == 0, timeout=30)
    skipped = counters.read(counters.DUPLICATES)
    redundant = skipped.get(WELCOME, 0) + skipped.get(ANALYTICS, 0)
    print(f"redundant messages (skipped by the ledger): {redundant} of {result.redelivered} sent again")
    tally = check_invariant(sink, "slow backlog past EVENTBUS_REDELIVER_AFTER", committed=SIGNUPS)
    assert tally.redelivered == redundant == 2 * SIGNUPS
    # and: nothing is overdue any more
    assert reconcile().redelivered == 0


def test_a_signup_after_a_recovered_loss_is_delivered_once_and_not_sent_again(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    """Events sent after the loss are in the new Redis: once recovered, the reconciler leaves them alone."""
    start_pipeline(workers)
    wait_for(lambda: brokerwatch.BrokerMarker.objects.exists(), timeout=15, what="beat's first broker check")
    eventbus_redis.client().flushdb()  # the test's own redis-server (private_redis)
    wait_for(lambda: BrokerLoss.objects.filter(recovered_at__isnull=False).exists(), timeout=15, what="recovery")
    assert sign_up_via_client(Client()).status_code == 302
    wait_until_delivered(sink, timeout=30)
    check_invariant(sink, "sign-up after a recovered loss", committed=1)
