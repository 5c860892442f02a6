"""Workers killed with SIGKILL in the middle of their work: no event lost, no effect doubled."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from eventbus.observability import counters
from project import queues
from tests.conftest import wait_for
from tests.factories import sign_up_via_client
from tests.faults.harness import VISIBILITY_TIMEOUT, queue_length, unacked, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIGNUPS = 200
# Sign-ups go on until the killing is over, however long it takes, within reason.
MOST_SIGNUPS = 1000
# People sign up at the pace the workers keep: while this many welcome emails wait in
# their queue, the next sign-up waits. So there is always a send to catch a worker in,
# however long the kills take (a killed send's effect lock makes its redelivery wait
# out the lock), and the backlog left to drain at the end stays small.
MOST_WAITING = 20
POOL_KILLS = 6
QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER)
# A provider's usual latency, and a slow moment of it during which the test strikes.
LATENCY = 0.01
SLOW_LATENCY = 0.5


class SignUps(threading.Thread):
    """People signing up through the form, one after another (never more than ``MOST_WAITING``
    emails ahead of the workers), while the test does its damage: at least ``minimum`` of them,
    and on until ``enough`` is set (at most ``most``)."""

    def __init__(self, minimum: int, most: int) -> None:
        super().__init__(name="sign-ups", daemon=True)
        self.minimum, self.most = minimum, most
        self.enough = threading.Event()
        self.statuses: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = Client()
            while len(self.statuses) < self.most and (len(self.statuses) < self.minimum or not self.enough.is_set()):
                if queue_length(queues.NOTIFICATIONS) >= MOST_WAITING:
                    time.sleep(0.01)
                    continue
                self.statuses.append(sign_up_via_client(client).status_code)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


def backlog() -> int:
    return queue_length(queues.NOTIFICATIONS) + queue_length(queues.ANALYTICS)


def strike(sink: ProviderSink, kill: Callable[[], bool]) -> None:
    """Make the provider slow for a moment, kill inside a send, and make sure it was inside."""
    sink.latency = SLOW_LATENCY
    try:
        assert kill(), "the kill came too late: the provider had already answered"
    finally:
        sink.latency = LATENCY


def test_sigkilled_pool_processes_and_workers_lose_nothing_and_double_nothing(
    workers: Workers, sink: ProviderSink
) -> None:
    """While people sign up, pool processes are SIGKILLed in the middle of sending an email
    (the sink says a send is in progress and not yet accepted; /proc says which process
    holds that connection); then the whole of one worker (main process and pool) is
    SIGKILLed the same way while the other keeps going, and it is restarted later.

    A pool process's death is seen by its worker, which puts the message back at once
    (acks_late + reject_on_worker_lost). A whole worker's reserved messages stay
    unacknowledged in Redis and come back once the visibility timeout has passed: the
    restarted worker sweeps them back to their queues when it starts. The ledger turns
    every redelivery of an effect that already happened into a counted duplicate.
    """
    sink.latency = LATENCY
    a = workers.spawn("kill-a", *QUEUES)
    b = workers.spawn("kill-b", *QUEUES)
    workers.wait_ready(a, b)
    kills: list[str] = []
    signing_up = SignUps(SIGNUPS, MOST_SIGNUPS)

    def during_sign_ups() -> str:
        return f"{len(signing_up.statuses)} signed up, backlog {backlog()}"

    # when: people sign up all along, and pool processes die mid-send, in a and b by turns
    signing_up.start()
    try:
        for n in range(POOL_KILLS):
            victim = (a, b)[n % 2]
            time.sleep(0.2)
            strike(sink, lambda v=victim: v.kill_sender(sink))
            kills.append(f"{victim.name}: a pool process killed mid-send; {during_sign_ups()}")
            wait_for(lambda v=victim: len(v.pool()) == 2, timeout=15, what=f"{victim.name}'s pool process replaced")

        # The worker notices a lost task a few seconds late; let a settle the ones it lost
        # before it dies itself, so that each kill is accounted for in its log.
        wait_for(lambda: a.lost_jobs() == (POOL_KILLS + 1) // 2, timeout=20, what="worker a's lost tasks put back")

        # and: the whole of worker a dies, mid-send, while b keeps going
        def kill_whole_worker() -> bool:
            _, port = wait_for(lambda: a.sender(sink), timeout=30, interval=0.002, what="worker a sending")
            a.kill()
            return sink.abandoned_before_accepting(port)

        strike(sink, kill_whole_worker)
        killed_at = time.monotonic()
        assert not a.alive() and not a.pool()
        kills.append(f"{a.name}: the whole worker killed mid-send; {during_sign_ups()}, unacked {unacked()}")
    finally:
        signing_up.enough.set()
        signing_up.join(timeout=120)
    assert not signing_up.is_alive() and signing_up.error is None, signing_up.error
    committed = len(signing_up.statuses)
    assert committed >= SIGNUPS and signing_up.statuses == [302] * committed

    # then: once a's reservations are past the visibility timeout, a restarted worker
    # sweeps them back to their queues as it starts
    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 1 - (time.monotonic() - killed_at)))
    workers.start("kill-a2", *QUEUES)
    wait_until_delivered(sink, timeout=60)
    wait_for(lambda: backlog() == 0 and unacked() == 0, timeout=30, what="queues drained, nothing unacknowledged")

    # and: a relay finds nothing left behind in the outbox
    out = io.StringIO()
    call_command("relay_outbox", grace=0, stdout=out)
    print(out.getvalue().strip())
    assert out.getvalue().startswith("dispatched 0 of 0 waiting events")

    lost_jobs = sum(w.lost_jobs() for w in workers.started)
    print("\n".join(kills))
    print(f"tasks lost with their pool process and put back: {lost_jobs}")
    print(f"duplicates skipped by the ledger: {counters.read(counters.DUPLICATES)}")
    # Every pool-process kill took a running task with it.
    assert lost_jobs == POOL_KILLS
    check_invariant(sink, "sigkill", committed=committed)
