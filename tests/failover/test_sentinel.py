"""Redis behind Sentinel: the primary killed, failed over and stalled mid-flow; every sign-up done once.

A real topology (lab/failover/sentinel.py: a primary, two replicas, three
Sentinels, with passwords) carries the broker and the bus's keys; real prefork
workers and beat follow the primary from REDIS_SENTINELS alone. Sign-ups are
committed before and right after each fault, with email slowed so that
messages wait in the queues and in the workers when it strikes, and one more
once the new primary is named (its email proves the workers consume there).
After each fault: the primary's port changed, every committed sign-up has one
email and one analytics row (tests/faults/invariants.py), and the workers and
beat are the processes they were.

The second test makes a primary that missed writes on purpose (its replicas
stopped while sign-ups were queued and the marker rotated, then killed) and
proves the broker watch records the loss and the reconciler sends what was
lost at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import Client, override_settings

from eventbus import conf
from eventbus.celery_settings import celery_settings
from eventbus.models import BrokerLoss
from eventbus.observability.stalls import worker_health
from eventbus.operations import brokerwatch
from lab.failover.sentinel import SentinelTopology
from project import queues
from project.celery import app as celery_app
from tests.brokers import using_broker
from tests.conftest import wait_for, worker_env
from tests.faults.harness import FAULT_ENV, queue_length, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

BATCH = 8
"""Sign-ups committed before a fault, and as many right after it (while the Sentinels fail over)."""


@contextmanager
def following(topology: SentinelTopology) -> Iterator[None]:
    """This process's settings, Redis client and Celery app follow the topology's primary."""
    env = topology.env()
    bus = {setting.name: getattr(settings, setting.name) for setting in conf.SETTINGS}
    derived = celery_settings({**bus, **env})
    names = ("broker_transport", "broker_transport_options", "broker_failover_strategy")
    previous = {name: celery_app.conf[name] for name in names}
    with ExitStack() as stack:
        stack.enter_context(override_settings(**env))
        stack.enter_context(using_broker(derived["CELERY_BROKER_URL"]))
        celery_app.conf.update({name: derived[f"CELERY_{name.upper()}"] for name in names})
        try:
            yield
        finally:
            celery_app.conf.update(previous)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    started = SentinelTopology(tmp_path / "sentinel")
    started.start()
    try:
        with following(started):
            yield started
    finally:
        started.stop()


@pytest.fixture
def sink() -> Iterator[ProviderSink]:
    with ProviderSink() as running:
        yield running


@pytest.fixture
def workers(topology: SentinelTopology, sink: ProviderSink, tmp_path: Path) -> Iterator[Workers]:
    env = worker_env(**topology.env(), EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(sink.port), **FAULT_ENV)
    env.pop("CELERY_BROKER_URL", None)  # derived from REDIS_SENTINELS, as in production
    pool = Workers(env, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def start_pipeline(workers: Workers) -> dict[str, int]:
    """Mail, analytics and housekeeping workers and beat (broker watch every second); their pids."""
    started = [
        workers.spawn("sentinel-mail", queues.NOTIFICATIONS),
        workers.spawn("sentinel-analytics", queues.ANALYTICS, queues.DEAD_LETTER),
        workers.spawn("sentinel-eventbus", queues.EVENTBUS, concurrency=1),
    ]
    workers.wait_ready(*started)
    workers.start_beat(EVENTBUS_BROKER_CHECK_INTERVAL="1")
    return {worker.name: worker.pid for worker in workers.started}


def same_processes(workers: Workers, pids: dict[str, int]) -> None:
    for worker in workers.started:
        assert worker.alive(), f"{worker.name} exited:\n{worker.log()[-3000:]}"
    assert {worker.name: worker.pid for worker in workers.started} == pids


def first_delivery_after(sink: ProviderSink, count: int, fault_at: float, timeout: float = 60) -> float:
    wait_for(lambda: len(sink.messages) > count, timeout=timeout, interval=0.02, what="a delivery after the fault")
    return time.monotonic() - fault_at


@pytest.mark.parametrize(
    "sequence",
    [
        ("primary paused past down-after", "kill -9 of the primary"),
        ("SENTINEL FAILOVER",),
        ("SENTINEL FAILOVER", "kill -9 of the primary"),
        ("SENTINEL FAILOVER", "primary paused past down-after"),
    ],
    ids=["pause-then-kill", "forced-failover", "kill-after-forced-failover", "pause-after-forced-failover"],
)
def test_the_primary_killed_failed_over_and_stalled_mid_flow_loses_nothing_and_doubles_nothing(
    sequence: tuple[str, ...], topology: SentinelTopology, workers: Workers, sink: ProviderSink
) -> None:
    pids = start_pipeline(workers)
    client = Client()
    committed = 0
    all_faults: dict[str, Callable[[], object]] = {
        "SENTINEL FAILOVER": topology.force_failover,
        "primary paused past down-after": lambda: topology.pause_primary(4),
        "kill -9 of the primary": topology.kill_primary,
    }
    faults = {label: all_faults[label] for label in sequence}
    for label, fault in faults.items():
        # given: sign-ups whose email waits behind a slow provider
        sink.latency = 0.3
        committed += sum(r.status_code == 302 for r in sign_up_many(BATCH, client))
        old = topology.primary()

        # when: the fault strikes (its own thread: a pause lasts), and people sign up meanwhile
        fault_at = time.monotonic()
        striking = Striking(fault)
        committed += sum(r.status_code == 302 for r in sign_up_many(BATCH, client))
        new = topology.wait_for_primary_change(old, timeout=45)
        failed_over = time.monotonic() - fault_at
        delivered = len(sink.messages)
        sink.latency = 0.0
        # and: one more sign-up once the new primary is named. Its email can only come through the new
        # primary, so the wait below proves the workers consume there, and never waits on a backlog
        # already drained. (It did, after a forced failover then a kill: the workers had sent every
        # email, from messages taken before the kill, just before the Sentinels named the new primary
        # (2.4 to 2.7 s after the kill); no delivery could follow. Nothing was stalled: MONITOR on the new
        # primary showed beat's tasks pushed and popped every second, the broker watch running.)
        committed += sum(r.status_code == 302 for r in sign_up_many(1, client))

        # then: the primary moved, and every committed sign-up is done once by the same processes
        first = first_delivery_after(sink, delivered, fault_at)
        striking.join()
        wait_until_delivered(sink, timeout=90)
        drained = time.monotonic() - fault_at
        print(
            f"{label}: {old} -> {new}; seconds after the fault: new primary named {failed_over:.1f}, "
            f"first delivery {first:.1f}, every backlog drained {drained:.1f}"
        )
        check_invariant(sink, f"sentinel, {label}", committed=committed)
        same_processes(workers, pids)
        # and: the stall check (manage.py worker_health) reads every worker through the new primary
        # and calls none stalled, as none is; a worker with messages waiting that finished nothing
        # for EVENTBUS_STALL_AFTER would be (eventbus/observability/stalls.py).
        health = worker_health()
        assert len(health) >= 3 and not [h.reason for h in health if h.stalled]
        if label == "kill -9 of the primary":
            topology.rejoin()
        if label == "primary paused past down-after":
            # and: the resumed node is a replica answering READONLY to a client that still wrote to it
            assert topology.role(old) == "slave"
            with pytest.raises(redis.ReadOnlyError):
                topology.node(old).set("written-to-a-demoted-primary", "1")


class Striking(threading.Thread):
    """A fault running in a thread of its own; ``join()`` re-raises what it raised."""

    def __init__(self, fault: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fault = fault
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.fault()
        except BaseException as exc:  # handed to the test's thread by join()
            self.error = exc

    def join(self, timeout: float | None = 60) -> None:
        super().join(timeout)
        assert not self.is_alive(), "the fault did not end"
        if self.error is not None:
            raise self.error


def test_a_new_primary_that_missed_writes_is_seen_by_the_broker_watch_and_reconciled_at_once(
    topology: SentinelTopology, workers: Workers, sink: ProviderSink
) -> None:
    # given: the broker marked intact, then both replicas stopped and cut off (they miss what follows;
    # stopped, they cannot connect again, and cut off, nothing waits for them in a socket's buffer)
    assert brokerwatch.check() is None
    primary = topology.primary()
    replicas = [port for port in topology.node_ports if port != primary]
    for port in replicas:
        os.killpg(topology.nodes[port].pid, signal.SIGSTOP)
    try:
        assert topology.node(primary).client_kill_filter(_type="replica") == len(replicas)
        # and: sign-ups queued on the primary alone (no worker runs), the marker rotated there alone
        assert [r.status_code for r in sign_up_many(BATCH)] == [302] * BATCH
        assert queue_length(queues.NOTIFICATIONS) == BATCH
        assert brokerwatch.check() is None

        # when: the primary dies, the replicas come back and one of them is promoted
        old = topology.kill_primary()
    finally:
        for port in replicas:
            os.killpg(topology.nodes[port].pid, signal.SIGCONT)
    new = topology.wait_for_primary_change(old, timeout=45)
    lost_at = time.monotonic()
    wait_for(lambda: _answers(), timeout=15, what="the new primary through the Sentinels")
    assert queue_length(queues.NOTIFICATIONS) == 0, "the new primary holds the messages: nothing was lost"

    # then: beat's broker watch tells the loss, and the system sends everything again, once
    start_pipeline(workers)
    wait_until_delivered(sink, timeout=90)
    elapsed = time.monotonic() - lost_at
    print(f"new primary {new} without {BATCH} sign-ups' messages: all delivered {elapsed:.1f}s later (with start)")
    loss = BrokerLoss.objects.get()
    assert "no longer holds the marker" in loss.reason and loss.recovered_at is not None
    tally = check_invariant(sink, "sentinel, new primary missed writes", committed=BATCH)
    assert tally.redelivered == 2 * BATCH


def _answers() -> bool:
    try:
        return queue_length(queues.NOTIFICATIONS) >= 0
    except redis.RedisError:
        return False
