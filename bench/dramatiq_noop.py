"""Figure 7, context only: Dramatiq's no-op throughput against bare Celery's, on the same Redis in the same run.

Per repetition, both sides the same way (figure 2's bare method):

1. one worker is started: Dramatiq with ``--processes 2 --threads 1`` (two
   worker processes, one thread each, each consuming for itself), the closest
   match to Celery's ``-c 2 -P prefork`` (whose main process consumes and
   hands tasks to two pool processes); both listen on two queues;
2. warm-up: ``2 x WARMUP`` messages go through it and are waited for;
3. the clock starts; this process sends ``2N`` no-op messages, alternating
   the two queues (Dramatiq: ``actor.send()``; Celery: ``apply_async`` over one
   producer), while the worker consumes;
4. the clock stops when the task's Redis counter has reached ``2N``, checked every 20 ms;
5. untimed, the counter must equal exactly ``2N`` more than before (nothing lost or doubled).

The bare Celery side is ``bench.throughput.Throughput.bare``, figure 2's
baseline, with its worker started without ``DJANGO_SETTINGS_MODULE``: neither
worker loads the project (Celery's Django fix-up would otherwise set Django
up in the Celery worker, with the project's apps and signal handlers).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import report
from bench.environment import BenchEnv
from bench.processes import spawn, stop, wait_until
from bench.sink import SinkProcess

# bench.throughput (Django models) and bench.dramatiq_app (reads the broker's URL
# when imported) are imported where used: ``python -m bench.dramatiq_noop``
# must configure the benchmark's environment first, in ``world()``.

EVENTS = 2000
QUICK_EVENTS = 150
REPETITIONS = 3
WARMUP = 20
POLL = 0.02
PROCESSES = 2
THREADS = 1


def dramatiq_run(env: BenchEnv, events: int, timeout: float, rep: int) -> dict[str, float]:
    from bench import dramatiq_app
    from bench.throughput import STARTUP_TIMEOUT

    log = env.log_dir / f"dramatiq-worker-{rep}.log"
    argv = [sys.executable, "-m", "dramatiq", "bench.dramatiq_app"]
    argv += ["--processes", str(PROCESSES), "--threads", str(THREADS), "--queues", *dramatiq_app.QUEUES]
    # Dramatiq logs every worker start and stop at INFO; its worker flag for less is --verbose only.
    worker = spawn(argv, env=os.environ, log=log)
    try:
        base = dramatiq_app.done()
        dramatiq_app.send(2 * WARMUP)
        warm = base + 2 * WARMUP
        wait_until(
            lambda: dramatiq_app.done() >= warm,
            timeout=STARTUP_TIMEOUT,
            what=f"the Dramatiq worker's warm-up (log: {log})",
            interval=POLL,
        )
        target = warm + 2 * events
        start = time.perf_counter()
        dramatiq_app.send(2 * events)
        sent = time.perf_counter() - start
        wait_until(
            lambda: dramatiq_app.done() >= target,
            timeout=timeout,
            what=f"{2 * events} Dramatiq deliveries (log: {log})",
            interval=POLL,
        )
        seconds = time.perf_counter() - start
        time.sleep(0.2)  # a doubled delivery would show here
        if dramatiq_app.done() != target:
            raise RuntimeError(f"Dramatiq counted {dramatiq_app.done() - warm} deliveries for {2 * events} messages")
    finally:
        stop(worker, timeout=30)
    return {"deliveries": 2 * events, "seconds": seconds, "send_seconds": sent, "per_second": 2 * events / seconds}


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    from bench import throughput

    events = QUICK_EVENTS if quick else EVENTS
    timeout = max(120.0, events * 0.5)
    bare = throughput.Throughput(env, sink, events, timeout)

    def celery_run(rep: int) -> dict[str, float]:
        # Its worker starts without the project (bench.environment.bare_env), like Dramatiq's.
        run = bare.bare(rep + 100)  # its own worker log names beside figure 1's
        return {
            "deliveries": run.deliveries,
            "seconds": run.seconds,
            "send_seconds": run.send_seconds,
            "per_second": run.per_second,
        }

    say(f"figure 7: {REPETITIONS} x {2 * events} no-op messages per side")
    reps: list[dict[str, Any]] = []
    for rep in range(REPETITIONS):
        if rep % 2 == 0:
            runs = {"candidate": dramatiq_run(env, events, timeout, rep), "baseline": celery_run(rep)}
        else:
            runs = {"baseline": celery_run(rep), "candidate": dramatiq_run(env, events, timeout, rep)}
        reps.append(runs)
        say(
            f"  rep {rep + 1}: {runs['candidate']['per_second']:,.0f} vs {runs['baseline']['per_second']:,.0f} no-ops/s"
        )
    rows = [
        report.row(
            "no-op throughput",
            unit="messages/s",
            candidate=(
                f"Dramatiq, {PROCESSES} processes x {THREADS} thread",
                [r["candidate"]["per_second"] for r in reps],
            ),
            baseline=("bare Celery no-op, -c 2 prefork", [r["baseline"]["per_second"] for r in reps]),
        )
    ]
    notes = [
        f"{2 * events} messages per side and repetition over two queues, timed from the first send to the last "
        f"delivery; {2 * WARMUP} warm-up messages first; context, no target. Dramatiq's sender took "
        f"{statistics.median([r['candidate']['send_seconds'] for r in reps]):.1f} s and Celery's "
        f"{statistics.median([r['baseline']['send_seconds'] for r in reps]):.1f} s (median)"
    ]
    return {"7_dramatiq": report.rows_figure("Dramatiq no-op throughput, for context", rows, reps, notes)}


if __name__ == "__main__":
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.dramatiq_noop", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with world() as (env, shared_sink):
        print(report.markdown_table(measure(env, shared_sink, quick=args.quick, say=print)))
