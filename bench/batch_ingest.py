"""Figure 2: analytics ingestion by the batching subscriber against bare Celery no-op tasks.

Both sides drain a backlog that waits in one queue, the same way:

1. one worker, ``-c 2 -P prefork``, on that one queue, is started and warmed up
   (``WARMUP`` messages through it end to end);
2. untimed, its consumer is paused (``celery control cancel_consumer``) and
   ``N`` messages are put in the queue (pipeline: ``N`` sign-up events relayed
   from the outbox, the welcome email's queue emptied after; bare: ``N``
   ``apply_async`` of the no-op);
3. **the clock starts** when the consumer is resumed (``add_consumer``, reply
   awaited) and **stops** when the last message is done (pipeline: ``N`` new
   ledger rows of ``analytics.record_event``; bare: the Redis counter reached
   ``N``), checked every 20 ms;
4. untimed, the pipeline's effects are checked: one analytics row and one
   ledger row per event, nothing dead-lettered.

The pipeline's worker runs the real subscriber with its real guarantees
(eventbus/delivery/batch.py): ledger, ordering check, delivery counts, effects and
ledger rows in one transaction per batch, acknowledgement after the commit.
The figure is events recorded (messages done) per second.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from bench import report
from bench.environment import BenchEnv, purge_queues, queue_depths
from bench.processes import spawn, stop, wait_until
from bench.sink import SinkProcess

EVENTS = 8_000
EVENTS_QUICK = 1_000
REPETITIONS = 3
WARMUP = 200
POLL = 0.02
STARTUP_TIMEOUT = 120.0
SUBSCRIBER = "analytics.record_event"
TITLE = "analytics ingestion, batching subscriber"

_numbers = itertools.count(7_000_000)


def _leave_for_relay(wire: object) -> None:
    """Stands in for the on-commit dispatch while the backlog is written."""


def queue_analytics(env: BenchEnv, count: int) -> None:
    """``count`` sign-up events relayed to the analytics queue (the email queue emptied after; untimed)."""
    from django.db import transaction

    from eventbus.outbox.publish import publish
    from eventbus.outbox.relay import relay
    from project import queues
    from signups.events import UserSignedUp, aggregate_of

    with mock.patch("eventbus.outbox.publish.dispatch_after_commit", _leave_for_relay):
        for start in range(0, count, 500):
            with transaction.atomic():
                for _ in range(min(500, count - start)):
                    n = next(_numbers)
                    publish(UserSignedUp(user_id=n, channel="web"), aggregate=aggregate_of(n))
    relay(grace=0)
    purge_queues(env, (queues.NOTIFICATIONS,))


def _recorded() -> int:
    from eventbus.models import ProcessedEvent

    return ProcessedEvent.objects.filter(subscriber=SUBSCRIBER).count()


class Ingest:
    def __init__(self, env: BenchEnv, events: int) -> None:
        self.env = env
        self.events = events
        self.timeout = max(120.0, events / 50)

    def _control(self, app: Any, command: str, queue: str, node: str) -> None:
        replies = getattr(app.control, command)(queue, destination=[node], reply=True, timeout=10)
        if not replies:
            raise RuntimeError(f"{command} {queue}: no reply from {node}")

    def pipeline(self, repetition: int) -> float:
        from analytics.models import AnalyticsEvent
        from bench.throughput import worker_argv
        from eventbus.models import DeadLetter
        from project import queues
        from project.celery import app

        node = f"ingest-{repetition}@bench"
        log = self.env.log_dir / f"ingest-worker-{repetition}.log"
        # The analytics pool as docs/operations.md starts it for batches: 2 x 100 messages may be buffered.
        argv = [*worker_argv("project", (queues.ANALYTICS,), node.split("@")[0], None), "--prefetch-multiplier", "100"]
        worker = spawn(argv, env=os.environ, log=log)
        try:
            start_rows, start_letters = _recorded(), DeadLetter.objects.count()
            queue_analytics(self.env, WARMUP)
            warm = start_rows + WARMUP
            wait_until(lambda: _recorded() >= warm, timeout=STARTUP_TIMEOUT, what=f"warm-up (log: {log})")
            self._control(app, "cancel_consumer", queues.ANALYTICS, node)
            queue_analytics(self.env, self.events)
            depth = queue_depths(self.env, (queues.ANALYTICS,))[queues.ANALYTICS]
            if depth != self.events:
                raise RuntimeError(f"the analytics queue holds {depth} messages, not {self.events}")
            target = warm + self.events
            start = time.perf_counter()
            self._control(app, "add_consumer", queues.ANALYTICS, node)
            wait_until(
                lambda: _recorded() >= target, timeout=self.timeout, what=f"ingestion (log: {log})", interval=POLL
            )
            seconds = time.perf_counter() - start
            rows = AnalyticsEvent.objects.count()
            if _recorded() != target or DeadLetter.objects.count() != start_letters or rows < target:
                raise RuntimeError(f"ingestion effects: {_recorded()} ledger rows, {rows} analytics rows, not {target}")
        finally:
            stop(worker, timeout=30)
        return self.events / seconds

    def bare(self, repetition: int) -> float:
        from bench import bare_app
        from bench.environment import bare_env
        from bench.throughput import worker_argv

        queue = bare_app.QUEUES[0]
        node = f"bare-ingest-{repetition}@bench"
        log = self.env.log_dir / f"bare-ingest-worker-{repetition}.log"
        worker = spawn(worker_argv("bench.bare_app", (queue,), node.split("@")[0], None), env=bare_env(), log=log)
        try:
            base = bare_app.done()
            _send_noops(queue, WARMUP)
            warm = base + WARMUP
            wait_until(lambda: bare_app.done() >= warm, timeout=STARTUP_TIMEOUT, what=f"bare warm-up (log: {log})")
            self._control(bare_app.app, "cancel_consumer", queue, node)
            _send_noops(queue, self.events)
            target = warm + self.events
            start = time.perf_counter()
            self._control(bare_app.app, "add_consumer", queue, node)
            wait_until(
                lambda: bare_app.done() >= target,
                timeout=self.timeout,
                what=f"bare ingestion (log: {log})",
                interval=POLL,
            )
            seconds = time.perf_counter() - start
        finally:
            stop(worker, timeout=30)
        return self.events / seconds


def _send_noops(queue: str, count: int) -> None:
    from bench import bare_app

    with bare_app.app.producer_or_acquire() as producer:
        for _ in range(count):
            bare_app.noop.apply_async(queue=queue, routing_key=queue, producer=producer, retry=False)


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    """Figure 2: events recorded per second by the batching subscriber against bare no-op tasks per second."""
    from django.conf import settings

    from eventbus.contract import registry
    from project import queues

    events = EVENTS_QUICK if quick else EVENTS
    if events >= settings.EVENTBUS_HIGH_WATER_MARK:
        raise RuntimeError(f"{events} events reach the high-water mark: the relay would shed analytics")
    purge_queues(env, (queues.NOTIFICATIONS, queues.ANALYTICS))
    ingest = Ingest(env, events)
    say(f"figure 2: {REPETITIONS} x {events} events per side")
    candidate: list[float] = []
    baseline: list[float] = []
    for rep in range(REPETITIONS):
        if rep % 2 == 0:
            candidate.append(ingest.pipeline(rep))
            baseline.append(ingest.bare(rep))
        else:
            baseline.append(ingest.bare(rep))
            candidate.append(ingest.pipeline(rep))
        say(f"  rep {rep + 1}: {candidate[-1]:,.0f} vs {baseline[-1]:,.0f} events/s")
    say(f"figure 2: {statistics.median(candidate):,.0f} vs {statistics.median(baseline):,.0f} events/s")
    batch = registry.get(SUBSCRIBER).batch
    row = report.row(
        f"{events:,} events from a backlog",
        unit="events/s",
        candidate=(f"{SUBSCRIBER}, batches of up to {batch}, one worker -c 2 --prefetch-multiplier 100", candidate),
        baseline=("bare Celery no-op, one worker -c 2", baseline),
        target=(">=", 2.0),
    )
    notes = [
        f"messages done per second draining {events:,} queued messages, {REPETITIONS} repetitions; the clock runs "
        "from the paused consumer's add_consumer to the last ledger row (pipeline) or counter increment (bare)"
    ]
    repetitions = [{"candidate": c, "baseline": b} for c, b in zip(candidate, baseline, strict=True)]
    return {"2_ingest": report.rows_figure(TITLE, [row], repetitions, notes)}


def main() -> int:
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.batch_ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{EVENTS_QUICK} events per side instead of {EVENTS}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (worker logs)")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with world(say=say, keep=args.keep) as (env, sink):
        figures = measure(env, sink, quick=args.quick, say=say)
    print(report.markdown_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
