"""The broker goes away during sign-ups and comes back: sign-ups never fail, no event is lost or doubled."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.test import Client

from eventbus import counters
from eventbus.models import OutboxEvent
from eventbus.relay import relay, waiting_count
from project import queues
from tests.conftest import wait_for
from tests.factories import sign_up_via_client
from tests.faults.harness import sign_up_many, unacked, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BEFORE, DURING, AFTER = 20, 20, 10
DOWN_FOR = 5.0
# A sign-up publishes with bounded connect and publish timeouts (EVENTBUS_PUBLISH_TIMEOUT);
# with the broker refusing connections it must stay well below this.
SLOWEST_SIGNUP = 3.0


def run_outage(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis, stop_when: Callable[[Client], int], label: str
) -> None:
    """Sign-ups before, during and after a broker outage.

    ``stop_when`` brings about the moment to stop the broker and returns how many more people it signed up.
    """
    mail = workers.spawn("outage-mail", queues.NOTIFICATIONS)
    analytics = workers.spawn("outage-analytics", queues.ANALYTICS, queues.DEAD_LETTER)
    workers.wait_ready(mail, analytics)
    client = Client()

    # given: sign-ups, and the moment the test waits for
    assert [r.status_code for r in sign_up_many(BEFORE, client)] == [302] * BEFORE
    before = BEFORE + stop_when(client)
    state = f"{len(sink.messages)} of {before} emails sent, {unacked()} messages unacknowledged"

    # when: the broker goes down (SIGTERM: its append-only file is flushed)
    private_redis.stop()
    down_at = time.monotonic()
    print(f"broker stopped with {state}")

    # then: sign-ups still succeed, quickly; their events wait in the outbox
    slowest = 0.0
    for _ in range(DURING):
        started = time.monotonic()
        assert sign_up_via_client(client).status_code == 302
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < SLOWEST_SIGNUP, f"a sign-up took {slowest:.2f}s with the broker down"
    pending = OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count()
    assert pending >= DURING
    print(f"slowest sign-up with the broker down: {slowest:.3f}s; {pending} events pending in the outbox")

    # when: the broker comes back on the same port, with its data
    time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
    private_redis.start()
    print(f"broker down for {time.monotonic() - down_at:.1f}s")

    # then: new sign-ups are dispatched on commit again
    sink.latency = 0.0
    assert [r.status_code for r in sign_up_many(AFTER, client)] == [302] * AFTER

    # and: the relay sends what waited (it stops at a broker failure; the next run goes on)
    def relayed() -> bool:
        relay(grace=0)
        return waiting_count() == 0

    wait_for(relayed, timeout=30, interval=0.5, what="the outbox relayed")

    # and: the workers, never restarted, reconnect by themselves and deliver everything once
    time.sleep(1.0)
    for worker in (mail, analytics):
        assert worker.alive(), f"{worker.name} exited instead of reconnecting:\n{worker.log()[-3000:]}"
        assert "Connection to broker lost" in worker.log()
    wait_until_delivered(sink, timeout=60)
    wait_for(lambda: unacked() == 0, timeout=30, what="nothing left unacknowledged")
    print(f"duplicates skipped by the ledger: {counters.read(counters.DUPLICATES)}")
    check_invariant(sink, label, committed=before + DURING + AFTER)


def test_signups_succeed_while_redis_is_down_and_everything_arrives_once_after(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    """Redis is stopped once the workers have handled what was sent, and started again on the
    same port a few seconds later. Sign-ups during the outage commit and answer 302; their
    events wait in the outbox. Afterwards the idle workers reconnect by themselves and the
    relay sends what waited: every effect happens once."""

    def idle(client: Client) -> int:
        wait_until_delivered(sink, timeout=30, quiet=0.5)
        return 0

    run_outage(workers, sink, private_redis, idle, "broker outage, workers idle")


def test_a_worker_in_the_middle_of_a_task_survives_the_broker_going_away(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    """As above, but Redis stops while the email worker is in the middle of a send (a slow
    provider) with a free pool process, so it holds an unacknowledged message and is polling
    for the next. It must reconnect like the idle one, and the message come back."""

    def mid_send(client: Client) -> int:
        wait_until_delivered(sink, timeout=30, quiet=0.5)
        # One more sign-up, whose email meets a slow provider.
        sink.latency = 1.5
        assert sign_up_via_client(client).status_code == 302
        wait_for(lambda: sink.sending_from(at_least=0.5), timeout=10, interval=0.01, what="a send in progress")
        return 1

    run_outage(workers, sink, private_redis, mid_send, "broker outage, worker mid-send")
