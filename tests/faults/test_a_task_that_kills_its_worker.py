"""A task that kills its worker process on every attempt (a segfaulting library) does not loop for ever.

Each death puts its message back (acks_late, reject_on_worker_lost) and the
worker replaces the process; the delivery count in Redis (eventbus/delivery/guards/attempts.py)
sees the same task start again and again without ever ending, and after
EVENTBUS_MAX_DELIVERIES starts the next delivery dead-letters it instead of
running it once more.
"""

from __future__ import annotations

import pytest

from eventbus.models import DeadLetter
from project import queues
from tests.conftest import wait_for
from tests.faults.faultapp.probes import KILLER, attempts, killed_pids
from tests.faults.harness import probe_wire, queue_length, send_probe, unacked
from tests.faults.processes import Workers

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MAX_DELIVERIES = 2


def test_a_task_that_keeps_killing_its_worker_is_dead_lettered(workers: Workers) -> None:
    # given: a worker that allows a delivery MAX_DELIVERIES starts
    worker = workers.start("killed", queues.ANALYTICS, queues.DEAD_LETTER, EVENTBUS_MAX_DELIVERIES=str(MAX_DELIVERIES))

    # when: a message whose task kills its pool process every time it runs
    wire = probe_wire("killer")
    send_probe(KILLER, wire, queues.ANALYTICS)

    # then: it is dead-lettered as a task that killed its worker ...
    letter = wait_for(
        lambda: DeadLetter.objects.filter(kind="worker_lost").first(), timeout=60, what="the worker_lost letter"
    )
    assert letter.subscriber == KILLER and str(letter.event_id) == wire["id"]
    assert "died each time" in letter.exception_message

    # ... after it really killed its process MAX_DELIVERIES times: each start noted, in a pool
    # process of this worker that is gone now (the task noted its pid, then SIGKILLed it)
    assert len(attempts(KILLER, wire["id"])) == MAX_DELIVERIES
    killed = killed_pids(wire["id"])
    assert len(set(killed)) == MAX_DELIVERIES, killed

    # and: the worker lives on, its pool whole again without them, nothing left to deliver
    assert worker.alive()
    wait_for(lambda: len(worker.pool()) == 2, what="the pool processes replaced")
    assert not set(killed) & set(worker.pool())
    wait_for(lambda: queue_length(queues.ANALYTICS) == 0 and unacked() == 0, what="nothing left to deliver")
    assert DeadLetter.objects.count() == 1
