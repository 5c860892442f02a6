"""Where the time goes: cProfile of the publish path in this process and of the pipeline's pool processes."""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import sysconfig
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any
from unittest import mock

from bench.processes import REPO

_SITE = sysconfig.get_paths()["purelib"] + "/"


def _text(stats: pstats.Stats, sort: str, limit: int) -> str:
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    text = stream.getvalue()
    for prefix, short in ((_SITE, ""), (str(REPO) + "/", ""), (sys.prefix, "<venv>")):
        text = text.replace(prefix, short)
    return text


def summarize(stats: pstats.Stats, title: str, limit: int = 35) -> str:
    return (
        f"# {title}\n\n## by cumulative time\n{_text(stats, 'cumulative', limit)}\n"
        f"## by own time\n{_text(stats, 'tottime', limit)}"
    )


Where = tuple[tuple[str, str], ...]
"""(file name ending, function name) pairs whose cumulative times are added up."""


def _in(file_end: str, *functions: str) -> Where:
    return tuple((file_end, function) for function in functions)


# Where a pipeline delivery spends its time. A function that a version of the
# code does not have shows 0 calls.
WORKER_BUCKETS: tuple[tuple[str, Where], ...] = (
    ("pool process, wall time", _in("billiard/pool.py", "workloop")),
    ("  idle: waiting for the next task", _in("billiard/pool.py", "receive")),
    ("  one task, as Celery runs it", _in("celery/app/trace.py", "trace_task")),
    ("    result backend rows (SUCCESS; STARTED too where tracked)", _in("celery/backends/base.py", "store_result")),
    ("    the consumer (eventbus/delivery/consumer.py)", _in("eventbus/delivery/consumer.py", "consume")),
    (
        "      the guards before the effect: one Redis round trip, then each verdict",
        _in("eventbus/delivery/pipeline.py", "check"),
    ),
    (
        "        ledger: already processed? (SELECT)",
        _in("eventbus/delivery/ledger.py", "has_processed", "processed_ids"),
    ),
    (
        "      ledger: claim, record, runtime (INSERT, UPDATE)",
        _in("eventbus/delivery/ledger.py", "claim", "claim_many", "record", "record_runtime"),
    ),
    (
        "      circuit breaker outside the round trips (Redis scripts)",
        _in("eventbus/protection/breaker.py", "before_call", "note_success", "record_failure"),
    ),
    (
        "      after the effect: lock, breaker, counts, latency (one Redis round trip)",
        _in("eventbus/delivery/pipeline.py", "finish"),
    ),
    ("      acting on the verdict (retry, wait, dead letter)", _in("eventbus/delivery/outcomes.py", "act")),
    ("      handler: welcome email (user, render, SMTP)", _in("notifications/subscribers.py", "send_welcome_email")),
    ("      handler: analytics row", _in("analytics/subscribers.py", "record_event")),
    ("    a batch of analytics events (eventbus/delivery/batch.py)", _in("eventbus/delivery/batch.py", "run_batch")),
    (
        "  across the above: waiting for SQLite's write lock (BEGIN IMMEDIATE)",
        _in("sqlite3/base.py", "_start_transaction_under_autocommit"),
    ),
    ("  across the above: opening database connections", _in("django/db/backends/base/base.py", "connect")),
    ("  across the above: Redis commands and pipelines (redis-py)", _in("redis/retry.py", "call_with_retry")),
)


def buckets(stats: pstats.Stats, spec: tuple[tuple[str, Where], ...] = WORKER_BUCKETS) -> str:
    """Cumulative time of a few functions, as a share of the first row's."""
    table = stats.stats  # type: ignore[attr-defined]
    rows: list[tuple[str, int, float]] = []
    for label, where in spec:
        calls, seconds = 0, 0.0
        for (filename, _, name), (_, primitive, _, cumulative, _) in table.items():
            if any(name == function and filename.endswith(end) for end, function in where):
                calls += primitive
                seconds += cumulative
        rows.append((label, calls, seconds))
    whole = rows[0][2] or 1.0
    lines = ["      calls   seconds   share  (cumulative, under cProfile)"]
    lines += [f"{calls:11,d} {seconds:9.1f} {seconds / whole:6.0%}  {label}" for label, calls, seconds in rows]
    return "\n".join(lines) + "\n"


def profile_calls(call: Callable[[int], object], numbers: range) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for n in numbers:
        call(n)
    profiler.disable()
    return pstats.Stats(profiler)


def load_dumps(directory: Path) -> pstats.Stats | None:
    dumps = sorted(str(p) for p in directory.glob("worker-*.prof"))
    if not dumps:
        return None
    return pstats.Stats(*dumps)


def publish_phases(calls: int, first: int) -> dict[str, dict[str, float]]:
    """Median microseconds of each phase of both sides of figure Pa, measured without a profiler.

    The two sides alternate call by call. The outbox side's on-commit work is
    split by wrapping ``eventbus.outbox.publish.dispatch_after_commit`` (the hook the
    commit runs) and ``eventbus.outbox.fanout.send_many`` (the broker part of it);
    the rest of the hook records the outcome in the outbox, and the rest of
    leaving the transaction is the COMMIT itself.
    """
    from django.db import transaction

    import eventbus.outbox.publish as publishing
    from bench import naive
    from eventbus.outbox import fanout as dispatch
    from signups.events import UserSignedUp, aggregate_of

    spent: dict[str, float] = {}
    samples: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = (perf_counter_ns() - start) / 1000

        return wrapper

    def record(side: str, phases: dict[str, float]) -> None:
        for name, value in phases.items():
            samples[f"{side}: {name}"].append(value)
        samples[f"{side}: total"].append(sum(phases.values()))

    with (
        mock.patch.object(publishing, "dispatch_after_commit", timed("hook", publishing.dispatch_after_commit)),
        mock.patch.object(dispatch, "send_many", timed("send", dispatch.send_many)),
    ):
        for n in range(first, first + calls):
            spent.clear()
            t0 = perf_counter_ns()
            with transaction.atomic():
                t1 = perf_counter_ns()
                publishing.publish(UserSignedUp(user_id=n, channel="web"), aggregate=aggregate_of(n))
                t2 = perf_counter_ns()
            t3 = perf_counter_ns()
            record(
                "outbox",
                {
                    "BEGIN IMMEDIATE": (t1 - t0) / 1000,
                    "publish() body: sequence number + outbox row (savepoints included)": (t2 - t1) / 1000,
                    "COMMIT": (t3 - t2) / 1000 - spent["hook"],
                    "on commit: send the 2 messages (send_many)": spent["send"],
                    "on commit: record the outcome on the outbox row": spent["hook"] - spent["send"],
                },
            )
            t0 = perf_counter_ns()
            with transaction.atomic():
                pass
            t1 = perf_counter_ns()
            naive.send_direct(n)
            t2 = perf_counter_ns()
            record("naive", {"empty transaction": (t1 - t0) / 1000, "2 x .delay()": (t2 - t1) / 1000})
    return {name: {"median_us": statistics.median(values)} for name, values in samples.items()}


def phases_text(phases: dict[str, dict[str, float]], calls: int) -> str:
    lines = [f"# figure Pa, phases without a profiler, median of {calls} alternating calls per side", ""]
    lines += [f"{value['median_us']:10,.0f} µs  {name}" for name, value in phases.items()]
    return "\n".join(lines) + "\n"
