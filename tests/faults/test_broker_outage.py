"""The broker goes away during sign-ups and comes back: sign-ups never fail, no event is lost or doubled."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.test import Client

from eventbus import redis as eventbus_redis
from eventbus.models import OutboxEvent
from eventbus.observability import counters
from eventbus.outbox.relay import relay, waiting_count
from project import queues
from tests import bounds
from tests.conftest import wait_for
from tests.factories import sign_up_via_client
from tests.faults.harness import WELCOME, sign_up_many, unacked, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BEFORE, DURING, AFTER = 20, 20, 10
DOWN_FOR = 5.0
# The slow provider of the mid-send test: time to see the send, read the broker and stop it,
# below the soft time limit (FAULT_ENV: 3 s); the email worker's SMTP timeout above it.
SLOW_PROVIDER = 2.0
MAIL_ENV = {"EMAIL_TIMEOUT": "3"}


def held_unacknowledged() -> dict[str, tuple[str, str]]:
    """What the broker holds as delivered and not yet acknowledged: delivery tag -> (task name, event id).

    kombu's Redis transport keeps each reserved message in the ``unacked`` hash under its
    delivery tag until the worker acknowledges it (or restores it).
    """
    held = {}
    for tag, raw in eventbus_redis.client().hgetall(settings.REDIS_KEY_PREFIX + "unacked").items():
        message = json.loads(raw)[0]
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        held[str(tag)] = (message["headers"]["task"], str(args[0]["id"]))
    return held


def run_outage(
    workers: Workers,
    sink: ProviderSink,
    private_redis: PrivateRedis,
    stop_when: Callable[[Client], int],
    label: str,
    stopped: Callable[[], None],
) -> None:
    """Sign-ups before, during and after a broker outage.

    ``stop_when`` brings about the moment to stop the broker and returns how many more people it signed up;
    ``stopped``, called as soon as the broker is down, proves that the moment was still there.
    """
    mail = workers.spawn("outage-mail", queues.NOTIFICATIONS, **MAIL_ENV)
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
    stopped()
    print(f"broker stopped with {state}")

    # then: sign-ups still succeed, each within its bounded waits on the broker; their events wait in the outbox
    slowest = 0.0
    for _ in range(DURING):
        started = time.monotonic()
        assert sign_up_via_client(client).status_code == 302
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < bounds.request_with_broker_down(), f"a sign-up took {slowest:.2f}s with the broker down"
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

    # and: the workers, never restarted, saw the broker go, reconnect by themselves and deliver everything once
    for worker in (mail, analytics):
        wait_for(
            lambda w=worker: "Connection to broker lost" in w.log() or not w.alive(),
            what=f"{worker.name} noticing the broker gone",
        )
    wait_until_delivered(sink, timeout=60)
    for worker in (mail, analytics):
        assert worker.alive(), f"{worker.name} exited instead of reconnecting:\n{worker.log()[-3000:]}"
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
        # Every message settled (wait_until_delivered): the workers hold nothing.
        wait_until_delivered(sink, timeout=30)
        return 0

    def held_nothing() -> None:
        assert not sink.sending_from(), "a send was under way: the workers were not idle"

    run_outage(workers, sink, private_redis, idle, "broker outage, workers idle", held_nothing)


def test_a_worker_in_the_middle_of_a_task_survives_the_broker_going_away(
    workers: Workers, sink: ProviderSink, private_redis: PrivateRedis
) -> None:
    """As above, but Redis stops while the email worker is in the middle of a send (a slow
    provider) with a free pool process, so it holds an unacknowledged message and is polling
    for the next. It must reconnect like the idle one, and the message come back."""

    sending: dict[str, object] = {}

    def mid_send(client: Client) -> int:
        wait_until_delivered(sink, timeout=30)
        # One more sign-up, whose email meets a slow provider.
        sink.latency = SLOW_PROVIDER
        assert sign_up_via_client(client).status_code == 302
        event = str(OutboxEvent.objects.filter(type="user.signed_up").latest("created_at").id)
        [port] = wait_for(lambda: sink.sending_from(at_least=1.2), interval=0.01, what="its send in progress")
        # The broker holds its message as delivered and not acknowledged (acks_late: the ack follows the send).
        held = held_unacknowledged()
        assert (WELCOME, event) in held.values(), f"the email's message is not held unacknowledged: {held}"
        sending.update(port=port, event=event)
        return 1

    def still_sending() -> None:
        # The send had not ended when the broker went: its task had not returned, so it could not have acknowledged.
        assert sending["port"] in sink.sending_from(), "the send ended before the broker stopped: not mid-send"
        assert f"<welcome.{sending['event']}@testserver>" not in {m.message_id for m in sink.messages}

    run_outage(workers, sink, private_redis, mid_send, "broker outage, worker mid-send", still_sending)
