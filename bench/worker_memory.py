"""Figure 6: a pipeline worker's resident size after 100,000 deliveries against after 10,000.

One worker, as figure 2 starts it (``-c 2 -P prefork``, queues
``notifications,analytics``), its email going to a sink of its own that keeps
no content (``bench/timed_sink.py``). This process feeds it real events:
``user.signed_up`` for a pool of ``USERS`` real users (each event a fresh
aggregate), written to the outbox in batches of ``BATCH`` in one transaction
with the on-commit dispatch held back, then sent by ``relay(grace=0)``, the
production relay. A batch is fed only while each subscriber queue holds
fewer than ``LOW_WATER`` messages, so backpressure never sheds or defers.

A delivery is a ledger row (``ProcessedEvent``): each event makes two, one
per subscriber. At ``first`` and at ``second`` deliveries the feeding stops,
the worker drains the queues and goes idle, and the resident size (VmRSS in
/proc) of its main process and of each pool process is read. The figure is
the total after ``second`` over the total after ``first``. Afterwards every
event has one ledger row per subscriber, one email at the sink and one
analytics row.

This is one long run, not repetitions: the "repetitions" of the figure are
its one run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import report
from bench.environment import BenchEnv, purge_queues, queue_depths
from bench.processes import spawn, stop, wait_until
from bench.procinfo import children, rss_kib
from bench.sink import SinkProcess
from bench.timed_sink import TimedSinkProcess
from project import queues

# Modules that need Django set up are imported where used, so that
# ``python -m bench.worker_memory`` can set it up first (in ``world()``).

FIRST, SECOND = 10_000, 100_000
QUICK_FIRST, QUICK_SECOND = 1_000, 5_000
USERS = 100
BATCH = 500
LOW_WATER = 1_000
SETTLE = 2.0
"""Seconds the worker is left idle before its size is read."""
PIPELINE_QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS)


def _leave_for_relay(wire: object) -> None:
    """Stands in for the on-commit dispatch: the relay sends the batch."""


def make_users(count: int) -> list[int]:
    from django.contrib.auth import get_user_model

    from signups.models import Account

    User = get_user_model()
    ids = []
    for i in range(count):
        email = f"memory-{i}@example.com"
        user = User.objects.create_user(username=email, email=email, password="correct horse battery staple")
        Account.objects.create(user=user)
        ids.append(user.pk)
    return ids


def feed(users: list[int], start: int, count: int) -> None:
    """``count`` events numbered from ``start``: written to the outbox in one transaction, then relayed."""
    from unittest import mock

    from django.db import transaction

    from eventbus.outbox.publish import publish
    from eventbus.outbox.relay import relay
    from signups.events import UserSignedUp

    with mock.patch("eventbus.outbox.publish.dispatch_after_commit", _leave_for_relay), transaction.atomic():
        for n in range(start, start + count):
            publish(UserSignedUp(user_id=users[n % len(users)], channel="web"), aggregate=f"memory:{n}")
    result = relay(grace=0)
    if result.dispatched != count or result.deferred or result.failed:
        raise RuntimeError(f"relay sent {result.dispatched} of {count} events ({result})")


def sizes(pid: int) -> dict[str, Any]:
    """VmRSS in KiB of the worker's main process and of each of its children (the pool), and their pids."""
    pool = children(pid)
    rss = {"main": rss_kib(pid)} | {f"pool {i + 1}": rss_kib(child) for i, child in enumerate(pool)}
    return {"pids": [pid, *pool], "rss_kib": rss, "total_kib": sum(rss.values())}


def _reached(count: Callable[[], int], target: int) -> Callable[[], bool]:
    return lambda: count() >= target


def measure(
    env: BenchEnv,
    sink: SinkProcess,
    *,
    quick: bool,
    say: Callable[[str], None],
    first: int | None = None,
    second: int | None = None,
) -> dict[str, dict]:
    from analytics.models import AnalyticsEvent
    from bench.throughput import STARTUP_TIMEOUT, worker_argv
    from eventbus.models import ProcessedEvent

    first = first or (QUICK_FIRST if quick else FIRST)
    second = second or (QUICK_SECOND if quick else SECOND)
    if not 0 < first < second or first % 2 or second % 2:
        raise ValueError("the delivery counts must be even, positive and rising")
    say(f"figure 6: worker resident size after {first:,} and {second:,} deliveries (one run)")
    purge_queues(env, PIPELINE_QUEUES)
    users = make_users(USERS)
    ledger_start = ProcessedEvent.objects.count()
    analytics_start = AnalyticsEvent.objects.count()
    mail = TimedSinkProcess(stamps=False)
    log = env.log_dir / "memory-worker.log"
    worker_env = {**os.environ, "EMAIL_PORT": str(mail.port)}
    worker = spawn(worker_argv("project", PIPELINE_QUEUES, "memory", None), env=worker_env, log=log)
    checkpoints: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    clock = time.monotonic()
    try:
        fed = 0

        def delivered() -> int:
            return ProcessedEvent.objects.count() - ledger_start

        for target in (first, second):
            while fed < target // 2:
                wait_until(
                    lambda: max(queue_depths(env, PIPELINE_QUEUES).values()) < LOW_WATER,
                    timeout=STARTUP_TIMEOUT,
                    what=f"the worker to take the queued messages (log: {log})",
                    interval=0.1,
                )
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode} (log: {log})")
                count = min(BATCH, target // 2 - fed)
                feed(users, fed, count)
                fed += count
                now = {"seconds": round(time.monotonic() - clock, 1), "deliveries": delivered()}
                curve.append(now | {"total_kib": sizes(worker.pid)["total_kib"]})
            wait_until(
                _reached(delivered, target),
                timeout=STARTUP_TIMEOUT + target / 20,
                what=f"{target:,} deliveries (log: {log})",
                interval=0.5,
            )
            time.sleep(SETTLE)
            if delivered() != target or any(queue_depths(env, PIPELINE_QUEUES).values()):
                raise RuntimeError(f"{delivered()} deliveries for {target} messages sent (log: {log})")
            checkpoints.append({"deliveries": target, "seconds": round(time.monotonic() - clock, 1)})
            checkpoints[-1].update(sizes(worker.pid))
            say(
                f"  after {target:,} deliveries ({time.monotonic() - clock:,.0f} s): "
                + ", ".join(f"{name} {kib / 1024:,.1f} MiB" for name, kib in checkpoints[-1]["rss_kib"].items())
            )
        events = second // 2
        wait_until(lambda: mail.count() >= events, timeout=30, what="every email at the sink")
        effects = (delivered(), mail.count(), AnalyticsEvent.objects.count() - analytics_start)
        if effects != (second, events, events):
            raise RuntimeError(f"effects (ledger, emails, analytics rows) {effects}, not {(second, events, events)}")
    finally:
        stop(worker, timeout=30)
        mail.close()
        purge_queues(env, PIPELINE_QUEUES)
    low, high = checkpoints
    if low["pids"] != high["pids"]:
        say(f"  the worker's processes changed between the two readings: {low['pids']} then {high['pids']}")
    rows = [
        report.row(
            "resident size, main and pool processes",
            unit="MiB",
            digits=1,
            candidate=(f"worker after {second:,} deliveries", [high["total_kib"] / 1024]),
            baseline=(f"the same worker after {first:,}", [low["total_kib"] / 1024]),
            target=("<=", 1.1),
        )
    ]
    for name in high["rss_kib"]:
        if name in low["rss_kib"]:
            rows.append(
                report.row(
                    f"resident size, {name} process",
                    unit="MiB",
                    digits=1,
                    candidate=(f"after {second:,}", [high["rss_kib"][name] / 1024]),
                    baseline=(f"after {first:,}", [low["rss_kib"][name] / 1024]),
                )
            )
    notes = [
        f"one run of one worker (-c 2 prefork, notifications and analytics), not repetitions: {second // 2:,} events "
        f"fed in batches of {BATCH} through the outbox and relay(grace=0); VmRSS read with the worker idle; "
        f"run took {time.monotonic() - clock:,.0f} s"
    ]
    repetitions = [{"checkpoints": checkpoints, "curve": curve}]
    return {"6_memory": report.rows_figure("pipeline worker memory", rows, repetitions, notes)}


if __name__ == "__main__":
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--first", type=int, help=f"deliveries at the first reading (default {FIRST:,})")
    parser.add_argument("--second", type=int, help=f"deliveries at the second reading (default {SECOND:,})")
    args = parser.parse_args()
    with world() as (env, shared_sink):
        figures = measure(env, shared_sink, quick=args.quick, say=print, first=args.first, second=args.second)
        print(report.markdown_table(figures))
