"""A batching worker killed with SIGKILL mid-batch: nothing lost but kombu's BRPOP gap, nothing doubled.

The analytics pool as docs/operations.md starts it for batches (prefetch 100
per process) drains a backlog. Its worker's main process fetches many
messages per round trip, recording each as unacknowledged in the same atomic
step (eventbus/fastpath/broker.py), and acknowledges a batch at once after it
committed. Its one pool process is killed while it holds a batch (the batch's
delivery counts are in Redis, and the worker then logs the batch lost with its
process), then the whole worker,
main process and pool, as a lost machine would be. At that moment every event
must be somewhere: recorded, still waiting in the queue, or held in Redis's
unacknowledged hash. The one exception is kombu's own gap: the message a
``BRPOP`` reply carries is off its list before anything records it (the
pop-and-record script records it in the same round trip as the ones it pops,
but after the reply), so a kill in between loses that one message, as it
did before; the reconciler sends such a delivery again
(tests/scaleout/test_lost_in_a_cut_connection.py). A second worker then sweeps
the held ones back (after the visibility timeout) and finishes: one row and
one ledger entry per event.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import transaction

from analytics.models import AnalyticsEvent
from eventbus import redis as eventbus_redis
from eventbus.models import DeadLetter, ProcessedEvent
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from eventbus.redis import key
from project import queues
from signups.events import UserSignedUp
from tests.conftest import wait_for
from tests.faults.harness import ANALYTICS, VISIBILITY_TIMEOUT, queue_length, unacked
from tests.faults.processes import Workers

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Large enough that the worker is still draining when it is killed: batches of
# 100 run at thousands of events a second, and an empty worker holds nothing.
EVENTS = 10000
BATCH_POOL = {"CELERY_WORKER_PREFETCH_MULTIPLIER": "100"}


def queued_events(count: int) -> set[str]:
    """``count`` sign-up events relayed to the analytics queue (the email queue emptied: nobody reads it)."""
    ids: set[str] = set()
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"):
        for start in range(0, count, 500):
            with transaction.atomic():
                ids |= {
                    str(publish(UserSignedUp(user_id=n, channel="web"), aggregate=f"user:{n}").id)
                    for n in range(start, start + 500)
                }
    relay(grace=0)
    eventbus_redis.client().delete(settings.REDIS_KEY_PREFIX + queues.NOTIFICATIONS)
    return ids


def event_id(message: dict[str, Any]) -> str:
    """The event id inside a kombu message as Redis holds it (a Celery protocol 2 body, base64)."""
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return str(args[0]["id"])


def recorded() -> set[str]:
    return {str(i) for i in ProcessedEvent.objects.filter(subscriber=ANALYTICS).values_list("event_id", flat=True)}


def whereabouts() -> tuple[set[str], set[str], set[str]]:
    """Events recorded, waiting in the queue, and held unacknowledged, read at one moment (the worker is dead)."""
    client = eventbus_redis.client()
    prefix = settings.REDIS_KEY_PREFIX
    waiting = {event_id(json.loads(raw)) for raw in client.lrange(prefix + queues.ANALYTICS, 0, -1)}
    held = {event_id(json.loads(raw)[0]) for raw in client.hvals(prefix + "unacked")}
    return recorded(), waiting, held


def batch_in_flight() -> bool:
    """A pool process is inside a batch: it counted the starts of the batch's deliveries in Redis
    and has not cleared them yet (eventbus/delivery/batch.py, steps 1 and 3)."""
    return next(eventbus_redis.client().scan_iter(match=key("deliveries", "*"), count=1000), None) is not None


# What the worker logs when its pool process died holding a batch
# (eventbus/delivery/buffer.py, _Buffer._acknowledge_or_reject).
BATCH_LOST = re.compile(r"analytics\.record_event: batch of (\d+) failed \(.*\); its messages go back")


def test_a_batching_worker_killed_mid_batch_loses_only_the_brpop_gap_and_doubles_nothing(workers: Workers) -> None:
    # given: a backlog, drained by a batching worker with one pool process (so the batch in flight is its)
    ids = queued_events(EVENTS)
    a = workers.start("batch-a", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1, **BATCH_POOL)
    wait_for(lambda: len(recorded()) >= 200, timeout=60, what="the first batches")

    # when: the pool process dies while it holds a batch (its worker puts back what the batch
    # held, or keeps holding it until the worker dies: either way it stays unacknowledged)
    [pool_process] = a.pool()
    wait_for(batch_in_flight, interval=0.001, what="a batch in flight")
    os.kill(pool_process, signal.SIGKILL)

    # then: it did hold one: its worker saw the process die, and the batch with it
    wait_for(lambda: f"pid:{pool_process} exited with 'signal 9 (SIGKILL)'" in a.log(), what="the pool process's death")
    lost_batch = wait_for(lambda: BATCH_LOST.search(a.log()), what="the batch lost with its process")
    print(f"a batch of {lost_batch.group(1)} died with its pool process")
    wait_for(lambda: len(a.pool()) == 1, what="the pool process replaced")

    # when: the whole worker dies, main process and pool at once, while it holds messages again
    wait_for(lambda: unacked() > 0, interval=0.01, what="the worker holding messages again")
    a.kill()

    # then: every event is recorded, waiting, or held unacknowledged, but at most
    # the one message of a BRPOP reply the kill may have caught (the module's docstring)
    done, waiting, held = whereabouts()
    assert held, "the worker held messages when it died"
    lost = ids - done - waiting - held
    assert len(lost) <= 1, f"{len(lost)} events neither recorded, waiting nor held: {sorted(lost)[:5]}"

    # when: another worker takes over (it sweeps the held messages back after the visibility timeout)
    workers.start("batch-b", queues.ANALYTICS, queues.DEAD_LETTER, **BATCH_POOL)
    wait_for(
        lambda: len(recorded()) == EVENTS - len(lost) and queue_length(queues.ANALYTICS) == 0 and unacked() == 0,
        timeout=VISIBILITY_TIMEOUT + 90,
        interval=0.5,
        what="every event recorded, nothing waiting or held",
    )

    # then: one ledger entry and one row per event, nothing dead-lettered
    assert recorded() == ids - lost
    assert ProcessedEvent.objects.filter(subscriber=ANALYTICS).count() == EVENTS - len(lost)
    rows = list(AnalyticsEvent.objects.values_list("event_id", flat=True))
    assert len(rows) == EVENTS - len(lost) and {str(r) for r in rows} == ids - lost
    assert not DeadLetter.objects.exists()
