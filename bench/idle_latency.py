"""Figure 5: delivery latency on an idle system, against bare Celery's publish-to-start latency.

Per repetition, both sides, one sample at a time with an idle gap between them:

- candidate: a real worker on the ``notifications`` queue (``-c 2 -P prefork``,
  as figure 2 starts it). This process calls ``sign_up()``; the sample is the
  time the SMTP sink (``bench/timed_sink.py``, a process of its own) accepted
  that user's welcome email minus ``time.time()`` taken just after the
  sign-up's transaction committed (at the start of the on-commit dispatch).
- baseline: a bare Celery worker (``bench/bare_latency.py``, the app of
  ``bench/bare_app.py``) on one queue, same flags, without the project
  (no ``DJANGO_SETTINGS_MODULE``, so Celery's Django fix-up does not load
  the project's apps and signal handlers into it); the sample is
  ``time.time()`` at the start of the task minus ``time.time()`` taken just
  before ``apply_async``.

Each sample is waited for before the gap starts, so the system is idle when
the next one begins. Untimed warm-up samples come first. Afterwards every
sign-up has exactly one email and one ledger row; every bare task started once.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from bench import report
from bench.environment import BenchEnv, bare_env, purge_queues
from bench.processes import spawn, stop, wait_until
from bench.sink import SinkProcess
from bench.stats import percentile
from bench.timed_sink import TimedSinkProcess
from project import queues

# Modules that need Django set up, or read the broker's URL when imported
# (bench.bare_app), are imported where used: ``python -m bench.idle_latency``
# must configure the benchmark's environment first, in ``world()``.

SAMPLES = 200
QUICK_SAMPLES = 30
REPETITIONS = 3
WARMUP = 10
GAP = 0.15
"""Seconds of idleness after each sample has arrived, before the next one starts."""
POLL = 0.005
SAMPLE_TIMEOUT = 10.0


class _Mailbox:
    """Arrival times by recipient, read from the timed sink."""

    def __init__(self, sink: TimedSinkProcess) -> None:
        self.sink = sink
        self.arrived: dict[str, float] = {}
        sink.drain()

    def _read(self) -> None:
        for accepted_at, recipients in self.sink.drain():
            for rcpt in recipients:
                if rcpt in self.arrived:
                    raise RuntimeError(f"two emails to {rcpt}")
                self.arrived[rcpt] = accepted_at

    def wait_for(self, rcpt: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while rcpt not in self.arrived:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no email to {rcpt} within {timeout:g}s")
            time.sleep(POLL)
            self._read()
        return self.arrived[rcpt]


def pipeline_side(env: BenchEnv, sink: TimedSinkProcess, samples: int, rep: int) -> list[float]:
    """Milliseconds from each sign-up's commit to its welcome email at the sink."""
    from bench.throughput import PASSWORD, STARTUP_TIMEOUT, worker_argv
    from eventbus.models import ProcessedEvent
    from eventbus.outbox import fanout as dispatch
    from signups.services import sign_up

    log = env.log_dir / f"latency-pipeline-worker-{rep}.log"
    worker_env = {**os.environ, "EMAIL_PORT": str(sink.port)}
    worker = spawn(worker_argv("project", (queues.NOTIFICATIONS,), f"latency-{rep}", None), env=worker_env, log=log)
    commits: list[float] = []
    real_dispatch = dispatch.dispatch_after_commit

    def stamped(wire: Any) -> None:
        commits.append(time.time())  # the transaction has just committed
        real_dispatch(wire)

    latencies: list[float] = []
    try:
        ledger_start = ProcessedEvent.objects.count()
        mailbox = _Mailbox(sink)
        with mock.patch("eventbus.outbox.publish.dispatch_after_commit", stamped):
            for i in range(WARMUP + samples):
                email = f"latency-{rep}-{i}@example.com"
                sign_up(email, PASSWORD)
                committed = commits[-1]
                arrived = mailbox.wait_for(email, STARTUP_TIMEOUT if i == 0 else SAMPLE_TIMEOUT)
                if i >= WARMUP:
                    latencies.append((arrived - committed) * 1000)
                time.sleep(GAP)
        expected = ledger_start + WARMUP + samples
        wait_until(lambda: ProcessedEvent.objects.count() >= expected, timeout=10, what="the ledger rows")
        if ProcessedEvent.objects.count() != expected or len(mailbox.arrived) != WARMUP + samples:
            raise RuntimeError(
                f"latency pipeline: {ProcessedEvent.objects.count() - ledger_start} ledger rows and "
                f"{len(mailbox.arrived)} emails for {WARMUP + samples} sign-ups (log: {log})"
            )
    finally:
        stop(worker, timeout=30)
        # Nobody consumes the analytics queue here.
        purge_queues(env, (queues.NOTIFICATIONS, queues.ANALYTICS))
    return latencies


def _started(n: int) -> Callable[[], bool]:
    from bench import bare_latency

    return lambda: bare_latency.count() >= n


def bare_side(env: BenchEnv, samples: int, rep: int) -> list[float]:
    """Milliseconds from just before ``apply_async`` to the bare task's start."""
    from bench import bare_latency
    from bench.throughput import STARTUP_TIMEOUT, worker_argv

    log = env.log_dir / f"latency-bare-worker-{rep}.log"
    argv = worker_argv("bench.bare_latency", (bare_latency.QUEUE,), f"bare-latency-{rep}", None)
    worker = spawn(argv, env=bare_env(), log=log)
    try:
        bare_latency.clear()
        for i in range(WARMUP + samples):
            if i == WARMUP:
                bare_latency.clear()
            bare_latency.send(i)
            started = i + 1 if i < WARMUP else i - WARMUP + 1  # the list was cleared after the warm-up
            wait_until(
                _started(started),
                timeout=STARTUP_TIMEOUT if i == 0 else SAMPLE_TIMEOUT,
                what=f"bare task {i} to start (log: {log})",
                interval=POLL,
            )
            time.sleep(GAP)
        stamps = bare_latency.stamps()
        if sorted(number for number, _, _ in stamps) != list(range(WARMUP, WARMUP + samples)):
            raise RuntimeError(f"bare latency: {len(stamps)} task starts for {samples} tasks (log: {log})")
    finally:
        stop(worker, timeout=30)
        bare_latency.clear()
    return [(started_at - sent_at) * 1000 for _, sent_at, started_at in stamps]


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 0.99),
        "mean_ms": statistics.fmean(samples),
        "max_ms": max(samples),
        "values_ms": [round(v, 3) for v in samples],
    }


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    samples = QUICK_SAMPLES if quick else SAMPLES
    say(f"figure 5: {REPETITIONS} x {samples} samples per side, {GAP * 1000:.0f} ms idle between samples")
    purge_queues(env, (queues.NOTIFICATIONS, queues.ANALYTICS))
    timed = TimedSinkProcess(stamps=True)
    reps: list[dict[str, Any]] = []
    try:
        for rep in range(REPETITIONS):
            if rep % 2 == 0:
                runs = {"candidate": pipeline_side(env, timed, samples, rep), "baseline": bare_side(env, samples, rep)}
            else:
                runs = {"baseline": bare_side(env, samples, rep), "candidate": pipeline_side(env, timed, samples, rep)}
            reps.append({role: _summary(values) for role, values in runs.items()})
            c, b = reps[-1]["candidate"], reps[-1]["baseline"]
            say(
                f"  rep {rep + 1}: p50 {c['p50_ms']:.1f} vs {b['p50_ms']:.1f} ms, "
                f"p99 {c['p99_ms']:.1f} vs {b['p99_ms']:.1f} ms"
            )
    finally:
        timed.close()
    candidate = "sign-up commit to welcome email accepted by the SMTP sink"
    baseline = "bare Celery, publish to task start"
    rows = [
        report.row(
            "p50",
            unit="ms",
            digits=1,
            candidate=(candidate, [r["candidate"]["p50_ms"] for r in reps]),
            baseline=(baseline, [r["baseline"]["p50_ms"] for r in reps]),
            target=("<=", 3.0),
        ),
        report.row(
            "p99",
            unit="ms",
            digits=1,
            candidate=(candidate, [r["candidate"]["p99_ms"] for r in reps]),
            baseline=(baseline, [r["baseline"]["p99_ms"] for r in reps]),
        ),
    ]
    notes = [
        f"{samples} samples per side and repetition, one at a time, {GAP * 1000:.0f} ms idle after each arrived; "
        f"{WARMUP} untimed warm-up samples first; one worker, -c 2 prefork, on the notifications queue "
        "(candidate) or one bare queue (baseline)"
    ]
    return {"5_latency": report.rows_figure("delivery latency on an idle system", rows, reps, notes)}


if __name__ == "__main__":
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.idle_latency", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with world() as (env, shared_sink):
        print(report.markdown_table(measure(env, shared_sink, quick=args.quick, say=print)))
