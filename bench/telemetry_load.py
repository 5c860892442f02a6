"""Figures T1 and T2: telemetry readings accepted at the API and rolled up end to end, against bare Celery.

One message carries a batch of readings, so both figures count readings
per second against the bare Celery no-op tasks per second measured in the
same run (``bench.batch_ingest``'s baseline: one worker ``-c 2`` draining a
queued backlog of no-op tasks).

T1, accepted: the project's app in gunicorn (``WORKERS`` sync workers),
loaded by ``wrk -t 2 -c 32`` with ``bench/telemetry_load.lua``: every request
POSTs a batch of ``BATCH`` new readings as one of two devices. Nobody
consumes the telemetry queue. An untimed warm-up first; only 202s count
(anything else fails the run); afterwards the database must hold ``BATCH``
readings per 202 (and at most 32 batches more, cut off by wrk's end) and
the outbox one dispatched event per batch.

T2, rolled up end to end: the same load for the same time, with one
telemetry worker (``-c 2``, prefork, default prefetch, as the run command
starts it) consuming. The clock runs from wrk's start to the commit of the
last rollup (every accepted reading counted in ``Rollup.count``). Lag per
batch: the ledger row's ``processed_at`` minus the event's ``occurred_at``
(the request's time), p50 and p99.

The device rate limit and the high-water mark are raised out of the way in
gunicorn's environment (both still run on every request).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench import report
from bench.environment import BenchEnv, purge_queues
from bench.processes import REPO, free_port, spawn, stop, wait_until
from bench.procinfo import wait_quiet
from bench.sink import SinkProcess

WORKERS = 4
"""gunicorn sync workers: two per core, as figure 4."""
CONNECTIONS = 32
WRK_THREADS = 2
BATCH = 100
SECONDS, QUICK_SECONDS = 10, 3
WARMUP_SECONDS = 2
REPETITIONS, QUICK_REPETITIONS = 3, 1
BARE_EVENTS, BARE_EVENTS_QUICK = 8_000, 1_000
SCRIPT = REPO / "bench" / "telemetry_load.lua"
SUBSCRIBER = "telemetry.rollup"


def _gunicorn(env: BenchEnv, log_name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    child_env = {
        **os.environ,
        "TELEMETRY_DEVICE_RATE": "1000000/s",
        "EVENTBUS_HIGH_WATER_MARK": "1000000000",
        "EVENTBUS_HIGH_WATER_MARKS": "",
    }
    argv = [sys.executable, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", str(WORKERS), "--timeout", "120", "--no-control-socket"]
    log = env.log_dir / log_name
    process = spawn(argv, env=child_env, log=log)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(answers, timeout=60, what=f"gunicorn on port {port} (log: {log})", interval=0.1)
    except BaseException:
        stop(process)
        raise
    return process, url


def _wrk(env: BenchEnv, url: str, seconds: int, tokens: list[str]) -> dict[str, int]:
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--timeout", "60s"]
    argv += ["-s", str(SCRIPT), url, "--", str(BATCH), *tokens]
    process = spawn(argv, env=os.environ, log=env.log_dir / "wrk-telemetry.log", stdout=subprocess.PIPE)
    try:
        out, _ = process.communicate(timeout=seconds + 90)
    finally:
        stop(process, timeout=5)
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"wrk exited with {process.returncode} and printed:\n{out.decode()}")
    result = {key: int(value) for key, value in (word.split("=") for word in lines[0].split()[1:])}
    errors = {k: result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts") if result[k]}
    if result["bad"] or errors or not result["ok"]:
        raise RuntimeError(
            f"telemetry load: {result['ok']} accepted, {result['bad']} other answers (the first: "
            f"{result['first_bad']}), socket errors {errors}; see the gunicorn log in the run directory"
        )
    return result


def _devices(tag: str) -> list[str]:
    from telemetry import tokens

    return [tokens.register(f"{tag}-{n}")[1] for n in range(WRK_THREADS)]


def _readings(tag: str) -> int:
    from telemetry.models import Reading

    return Reading.objects.filter(device__name__startswith=f"{tag}-").count()


def _rolled_up(tag: str) -> int:
    from django.db.models import Sum

    from telemetry.models import Rollup

    return int(Rollup.objects.filter(device__name__startswith=f"{tag}-").aggregate(n=Sum("count"))["n"] or 0)


def _check_accepted(tag: str, result: dict[str, int]) -> int:
    from eventbus.models import OutboxEvent

    readings = _readings(tag)
    if not result["ok"] * BATCH <= readings <= (result["ok"] + CONNECTIONS) * BATCH:
        raise RuntimeError(f"{tag}: {readings} readings in the database for {result['ok']} accepted batches")
    events = OutboxEvent.objects.filter(type="telemetry.readings_received", aggregate__startswith="device:")
    if events.exclude(status=OutboxEvent.Status.DISPATCHED).exists():
        raise RuntimeError(f"{tag}: accepted batches not dispatched")
    return readings


def accepted(env: BenchEnv, rep: int, seconds: int) -> dict[str, Any]:
    """T1: readings accepted per second at the API, nobody consuming."""
    from project import queues

    tag = f"accept-{rep}"
    tokens = _devices(tag)
    server, url = _gunicorn(env, f"gunicorn-telemetry-{tag}.log")
    try:
        _wrk(env, url, WARMUP_SECONDS, tokens)
        wait_quiet(server.pid, timeout=120)
        before = _readings(tag)
        result = _wrk(env, url, seconds, tokens)
    finally:
        stop(server, timeout=60)
    _check_accepted(tag, result)
    purge_queues(env, (queues.TELEMETRY,))
    duration = result["duration_us"] / 1e6
    return {
        "batches": result["ok"],
        "readings": result["ok"] * BATCH,
        "readings_in_db": _readings(tag) - before,
        "seconds": duration,
        "per_second": result["ok"] * BATCH / duration,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
    }


def rolled_up(env: BenchEnv, rep: int, seconds: int) -> dict[str, Any]:
    """T2: readings rolled up per second, from the first request to the last rollup's commit."""
    from bench.throughput import worker_argv
    from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent
    from project import queues

    tag = f"rollup-{rep}"
    tokens = _devices(tag)
    purge_queues(env, (queues.TELEMETRY,))
    node = f"telemetry-{rep}"
    worker_log = env.log_dir / f"telemetry-worker-{rep}.log"
    worker = spawn(worker_argv("project", (queues.TELEMETRY,), node, None), env=os.environ, log=worker_log)
    server, url = _gunicorn(env, f"gunicorn-telemetry-{tag}.log")
    letters = DeadLetter.objects.count()
    try:
        # Warm-up as its own device tag, drained before the clock starts.
        warm = _devices(f"warm-{tag}")
        _wrk(env, url, WARMUP_SECONDS, warm)
        wait_until(
            lambda: _rolled_up(f"warm-{tag}") == _readings(f"warm-{tag}"),
            timeout=120,
            what=f"warm-up rolled up (log: {worker_log})",
        )
        since = time.time()
        started = time.perf_counter()
        result = _wrk(env, url, seconds, tokens)
        total = _readings(tag)
        wait_until(lambda: _rolled_up(tag) >= total, timeout=600, what=f"rollup (log: {worker_log})", interval=0.05)
        elapsed = time.perf_counter() - started
    finally:
        stop(server, timeout=60)
        stop(worker, timeout=30)
    if _rolled_up(tag) != _readings(tag) or DeadLetter.objects.count() != letters:
        raise RuntimeError(f"{tag}: {_rolled_up(tag)} rolled up of {_readings(tag)} readings, or dead letters")
    from datetime import UTC, datetime

    occurred = dict(
        OutboxEvent.objects.filter(
            type="telemetry.readings_received", occurred_at__gte=datetime.fromtimestamp(since, UTC)
        ).values_list("id", "occurred_at")
    )
    processed = ProcessedEvent.objects.filter(subscriber=SUBSCRIBER, event_id__in=list(occurred)).values_list(
        "event_id", "processed_at"
    )
    lags = sorted((at - occurred[event_id]).total_seconds() for event_id, at in processed)
    return {
        "batches": result["ok"],
        "readings": total,
        "seconds": elapsed,
        "per_second": total / elapsed,
        "api_p99_ms": result["p99_us"] / 1000,
        "lag_p50_ms": _quantile(lags, 0.5) * 1000,
        "lag_p99_ms": _quantile(lags, 0.99) * 1000,
        "lag_samples": len(lags),
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    from bench.batch_ingest import Ingest

    seconds = QUICK_SECONDS if quick else SECONDS
    repetitions = QUICK_REPETITIONS if quick else REPETITIONS
    bare = Ingest(env, BARE_EVENTS_QUICK if quick else BARE_EVENTS)
    say(
        f"figures T1/T2: {repetitions} x wrk -t {WRK_THREADS} -c {CONNECTIONS}, batches of {BATCH}, {seconds} s, "
        f"against gunicorn --workers {WORKERS}; bare Celery no-op baseline beside each"
    )
    reps: list[dict[str, Any]] = []
    for rep in range(repetitions):
        runs: dict[str, Any] = {}
        order = ("accepted", "rolled_up", "bare") if rep % 2 == 0 else ("bare", "rolled_up", "accepted")
        for side in order:
            if side == "accepted":
                runs[side] = accepted(env, rep, seconds)
            elif side == "rolled_up":
                runs[side] = rolled_up(env, rep, seconds)
            else:
                runs[side] = {"per_second": bare.bare(100 + rep)}
        reps.append(runs)
        say(
            f"  rep {rep + 1}: accepted {runs['accepted']['per_second']:,.0f} readings/s "
            f"(p99 {runs['accepted']['p99_ms']:,.0f} ms), rolled up {runs['rolled_up']['per_second']:,.0f} "
            f"readings/s (lag p50 {runs['rolled_up']['lag_p50_ms']:,.0f} ms, p99 "
            f"{runs['rolled_up']['lag_p99_ms']:,.0f} ms), bare {runs['bare']['per_second']:,.0f} tasks/s"
        )

    def values(side: str, field: str = "per_second") -> list[float]:
        return [r[side][field] for r in reps]

    baseline = ("bare Celery no-op tasks, one worker -c 2", values("bare"))
    rows = [
        report.row(
            f"readings accepted at the API (batches of {BATCH}, {CONNECTIONS} connections)",
            unit="per s",
            candidate=(f"POST /api/v1/readings, gunicorn --workers {WORKERS}, nobody consuming", values("accepted")),
            baseline=baseline,
            target=(">=", 10.0),
        ),
        report.row(
            "readings rolled up, end to end",
            unit="per s",
            candidate=("the same load, one telemetry worker -c 2 consuming", values("rolled_up")),
            baseline=baseline,
            target=(">=", 5.0),
        ),
    ]
    notes = [
        f"T1 API p99 (ms, per repetition): {[round(v) for v in values('accepted', 'p99_ms')]}; "
        f"T2 API p99: {[round(v) for v in values('rolled_up', 'api_p99_ms')]}; "
        f"arrival-to-rollup lag p50: {[round(v) for v in values('rolled_up', 'lag_p50_ms')]} ms, "
        f"p99: {[round(v) for v in values('rolled_up', 'lag_p99_ms')]} ms",
        f"medians: accepted {statistics.median(values('accepted')):,.0f}/s, rolled up "
        f"{statistics.median(values('rolled_up')):,.0f}/s, bare {statistics.median(values('bare')):,.0f} tasks/s",
    ]
    return {"T_telemetry": report.rows_figure("telemetry readings (gunicorn, wrk)", rows, reps, notes)}


if __name__ == "__main__":
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_load", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with world() as (env, shared_sink):
        print(report.markdown_table(measure(env, shared_sink, quick=args.quick, say=print)))
