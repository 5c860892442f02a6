"""A worker told to stop finishes what it holds; a handler past its time limits is retried, not lost."""

from __future__ import annotations

import os
import signal

import pytest

from eventbus.contract import registry
from eventbus.models import DeadLetter, DeliveryStep, ProcessedEvent
from eventbus.observability import counters
from project import queues
from tests.conftest import wait_for
from tests.faults.faultapp.probes import STUBBORN, STUBBORN_HARD_LIMIT, STUBBORN_SUBSCRIBER, attempts, effects
from tests.faults.harness import WELCOME, probe_wire, send_probe, sign_up_many, unacked, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ALL = (queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER)


def test_sigterm_lets_the_task_in_flight_finish(workers: Workers, sink: ProviderSink) -> None:
    # given: one worker, in the middle of a slow send
    sink.latency = 1.5
    worker = workers.start("term", *ALL, concurrency=1)
    assert [r.status_code for r in sign_up_many(1)] == [302]
    wait_for(lambda: worker.sender(sink), timeout=20, interval=0.01, what="the worker mid-send")

    # when: it is asked to stop (warm shutdown), as a deploy or a scale-down does
    os.kill(worker.pid, signal.SIGTERM)
    worker.process.wait(timeout=30)

    # then: it exited cleanly after finishing the send, and left nothing unacknowledged
    assert worker.process.returncode == 0, worker.log()[-3000:]
    assert len(sink.messages) == 1
    assert unacked() == 0
    # the analytics message it had not started stays queued for the next worker
    workers.start("after-term", *ALL)
    wait_until_delivered(sink, timeout=30)
    check_invariant(sink, "sigterm", committed=1)


def test_a_handler_past_its_soft_time_limit_is_retried_until_it_fits(
    workers: Workers, sink: ProviderSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a provider slower than the email task's soft time limit. The limit
    # travels in the message from its publisher's task declaration, so this
    # process (the web) declares the same 1 s as the worker.
    task = registry.get(WELCOME).task
    monkeypatch.setattr(task, "soft_time_limit", 1.0)
    monkeypatch.setattr(task, "_exec_options", None)  # Celery caches the publishing options per task
    sink.latency = 2.5
    workers.start("slow", *ALL, EVENTBUS_SOFT_TIME_LIMIT="1", EMAIL_TIMEOUT="10")
    assert [r.status_code for r in sign_up_many(1)] == [302]

    # when: the first attempt runs out of time
    wait_for(
        lambda: DeliveryStep.objects.filter(step="retried", detail__contains="SoftTimeLimitExceeded").exists(),
        timeout=30,
        what="a retry after the soft time limit",
    )
    assert not sink.messages

    # then: once the provider is fast again, the email goes out once, and nothing is dead-lettered
    sink.latency = 0
    wait_until_delivered(sink, timeout=30)
    assert counters.read(counters.RETRIES).get(WELCOME, 0) >= 1
    check_invariant(sink, "soft time limit", committed=1)


def test_a_handler_killed_by_its_hard_time_limit_is_delivered_again_not_lost(workers: Workers) -> None:
    # given: a handler that ignores its soft time limit on its first attempt (stuck, as in C code)
    worker = workers.start("hard-limit", queues.ANALYTICS, queues.DEAD_LETTER)
    wire = {**probe_wire("hard-limit"), "type": STUBBORN}

    # when: it is delivered and its hard time limit kills its pool process
    send_probe(STUBBORN_SUBSCRIBER, wire, queues.ANALYTICS)

    # then: the message is put back (CELERY_TASK_ACKS_ON_TIMEOUT off), not acknowledged as failed,
    # and the second delivery has the effect, once
    wait_for(lambda: effects(STUBBORN_SUBSCRIBER, wire["id"]) >= 1, timeout=30, what="the effect after the kill")
    wait_for(lambda: unacked() == 0, timeout=10, what="nothing left unacknowledged")
    assert f"Hard time limit ({STUBBORN_HARD_LIMIT:g}s) exceeded" in worker.log()
    tries = attempts(STUBBORN_SUBSCRIBER, wire["id"])
    assert len(tries) == 2 and effects(STUBBORN_SUBSCRIBER, wire["id"]) == 1, tries
    assert ProcessedEvent.objects.filter(event_id=wire["id"], subscriber=STUBBORN_SUBSCRIBER).count() == 1
    assert not DeadLetter.objects.exists()
    print(f"killed after {tries[1] - tries[0]:.1f}s at the hard limit ({STUBBORN_HARD_LIMIT:g}s), delivered again once")
