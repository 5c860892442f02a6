"""Figure 1: end-to-end fan-out throughput against bare Celery no-op tasks.

Both sides, the same way:

1. untimed: the messages' source is prepared (pipeline: ``WARMUP + N`` sign-ups
   written to the outbox with the on-commit dispatch held back, as when the
   broker was down; bare: nothing to prepare);
2. one worker, ``-c 2 -P prefork``, consuming two queues, is started and warmed
   up: ``WARMUP`` events (``2 x WARMUP`` messages) go through it end to end;
3. the clock starts; this process sends ``2N`` messages as fast as it can
   (pipeline: ``relay(grace=0)`` of the ``N`` pending events; bare: ``2N``
   ``apply_async`` over one producer, alternating the two queues) while the
   worker consumes;
4. the clock stops when the last delivery is done, checked every 20 ms with
   one Redis read (pipeline: the subscribers' ``delivered`` counter, which each
   delivery raises after its ledger row committed, reached ``2N`` more; bare:
   the counter the task increments reached ``2N``);
5. untimed, the pipeline's effects are checked: ``2N`` new ledger rows, one
   email at the sink and one analytics row per event, nothing shed or doubled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from analytics.models import AnalyticsEvent
from bench import bare_app
from bench.environment import BenchEnv, bare_env
from bench.processes import spawn, stop, wait_until
from bench.sink import SinkProcess
from eventbus.contract.registry import subscriptions_for
from eventbus.models import ProcessedEvent
from eventbus.observability.counters import DELIVERED
from eventbus.outbox.relay import relay
from eventbus.redis import client as redis_client
from eventbus.redis import key
from project import queues
from signups.services import sign_up

WARMUP = 20
CONCURRENCY = 2
POLL = 0.02
STARTUP_TIMEOUT = 120.0
PASSWORD = "correct horse battery staple"
PIPELINE_QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS)


@dataclass(frozen=True)
class Run:
    side: str
    deliveries: int
    seconds: float
    """From the first message sent to the last delivery done."""
    send_seconds: float
    """Of which the sender (relay or ``apply_async`` loop) took this long to hand every message to Redis."""

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds


def _leave_for_relay(wire: object) -> None:
    """Stands in for the on-commit dispatch while the backlog is written."""


def seed_outbox(count: int, tag: str) -> None:
    """``count`` real sign-ups whose events stay pending in the outbox (untimed)."""
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit", _leave_for_relay):
        for i in range(count):
            sign_up(f"fanout-{tag}-{i}@example.com", PASSWORD)


def worker_argv(
    app: str, worker_queues: tuple[str, ...], name: str, profile_dir: Path | None, concurrency: int = CONCURRENCY
) -> list[str]:
    runner = ["-m", "celery"] if profile_dir is None else ["-m", "bench.profiled_worker", str(profile_dir)]
    return [
        sys.executable,
        *runner,
        "-A",
        app,
        "worker",
        "-Q",
        ",".join(worker_queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-l",
        "WARNING",
        "-n",
        f"{name}@bench",
        # Both only matter at start-up and between workers; there is one worker.
        "--without-mingle",
        "--without-gossip",
    ]


class Throughput:
    def __init__(self, env: BenchEnv, sink: SinkProcess, events: int, timeout: float) -> None:
        self.env = env
        self.sink = sink
        self.events = events
        self.timeout = timeout

    def _start(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        return spawn(argv, env=os.environ, log=self.env.log_dir / log_name)

    def pipeline(self, repetition: int, profile_dir: Path | None = None) -> Run:
        tag = f"{repetition}{'p' if profile_dir else ''}"
        seed_outbox(WARMUP + self.events, tag)
        ledger_start = ProcessedEvent.objects.count()
        mail_start = self.sink.count()
        analytics_start = AnalyticsEvent.objects.count()
        log = f"pipeline-worker-{tag}.log"
        worker = self._start(worker_argv("project", PIPELINE_QUEUES, f"pipeline-{tag}", profile_dir), log)
        try:
            relay(grace=0, limit=WARMUP)
            warm = ledger_start + 2 * WARMUP
            wait_until(
                lambda: ProcessedEvent.objects.count() >= warm,
                timeout=STARTUP_TIMEOUT,
                what=f"the pipeline worker's warm-up (log: {self.env.log_dir / log})",
                interval=POLL,
            )
            target = warm + 2 * self.events
            delivered_target = delivered() + 2 * self.events
            start = time.perf_counter()
            relay(grace=0)
            sent = time.perf_counter() - start
            wait_until(
                lambda: delivered() >= delivered_target,
                timeout=self.timeout,
                what=f"{2 * self.events} pipeline deliveries (log: {self.env.log_dir / log})",
                interval=POLL,
            )
            seconds = time.perf_counter() - start
            # Untimed: the counter runs behind the commits, so the ledger holds every row by now.
            if ProcessedEvent.objects.count() < target:
                raise RuntimeError(f"the delivered count reached {delivered_target}, the ledger not {target} rows")
            mail_target = mail_start + WARMUP + self.events
            wait_until(lambda: self.sink.count() >= mail_target, timeout=10, what="every email at the sink")
            # Every delivery had its effect (none shed, dead-lettered or doubled).
            effects = (
                ProcessedEvent.objects.count() - ledger_start,
                self.sink.count() - mail_start,
                AnalyticsEvent.objects.count() - analytics_start,
            )
            expected = (2 * (WARMUP + self.events), WARMUP + self.events, WARMUP + self.events)
            if effects != expected:
                raise RuntimeError(f"pipeline effects (ledger, emails, analytics rows) {effects}, not {expected}")
        finally:
            stop(worker, timeout=30)
        return Run("pipeline", 2 * self.events, seconds, sent)

    def bare(self, repetition: int) -> Run:
        log = f"bare-worker-{repetition}.log"
        argv = worker_argv("bench.bare_app", bare_app.QUEUES, f"bare-{repetition}", None)
        worker = spawn(argv, env=bare_env(), log=self.env.log_dir / log)
        try:
            base = bare_app.done()
            send_noops(2 * WARMUP)
            warm = base + 2 * WARMUP
            wait_until(
                lambda: bare_app.done() >= warm,
                timeout=STARTUP_TIMEOUT,
                what=f"the bare worker's warm-up (log: {self.env.log_dir / log})",
                interval=POLL,
            )
            target = warm + 2 * self.events
            start = time.perf_counter()
            send_noops(2 * self.events)
            sent = time.perf_counter() - start
            wait_until(
                lambda: bare_app.done() >= target,
                timeout=self.timeout,
                what=f"{2 * self.events} bare deliveries (log: {self.env.log_dir / log})",
                interval=POLL,
            )
            seconds = time.perf_counter() - start
        finally:
            stop(worker, timeout=30)
        return Run("bare", 2 * self.events, seconds, sent)


def delivered() -> int:
    """Deliveries whose effect is done, both subscribers: the ``delivered`` counter in Redis
    (eventbus/observability/counters.py).

    Each delivery adds to it right after its ledger row committed (eventbus/fastpath/bookkeeping.py), as the
    bare no-op adds to its own counter: one Redis read per poll on both sides. Counting the ledger's
    rows every 20 ms instead cost the database a ``COUNT(*)`` of a growing table each time, on the
    machine's two cores beside the worker (docs/benchmarks.md, figure 1).
    """
    names = [subscription.name for subscription in subscriptions_for("user.signed_up")]
    counts = redis_client().hmget(key("counters", DELIVERED), names)
    return sum(int(count or 0) for count in counts)


def send_noops(count: int) -> None:
    """``count`` no-op messages over one producer, alternating the two queues, like the relay's fan-out."""
    with bare_app.app.producer_or_acquire() as producer:
        for i in range(count):
            queue = bare_app.QUEUES[i % 2]
            bare_app.noop.apply_async(queue=queue, routing_key=queue, producer=producer, retry=False)
