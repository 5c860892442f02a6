"""``python -m bench.run``: every figure, each against its baseline, in one run on this machine.

Starts a redis-server and an SMTP sink of its own, uses a temporary SQLite
file, and cleans all of it up. Writes ``bench/results/<UTC time>.json`` and
``.md``; ``--update-doc`` also puts the table into ``docs/benchmarks.md`` and
draws ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.environment import BenchEnv
from bench.processes import REPO, redis_version
from bench.sink import SinkProcess
from bench.world import world

RESULTS = REPO / "bench" / "results"
CHART = REPO / "docs" / "benchmarks.png"

# Figure groups, in the order a full run measures them: the publish path
# (issue #2's figure P), then issue #5's figures 1 to 7. The long memory
# figure runs last; it grows the database the others read.
MODULES = {
    "ingest": "bench.batch_ingest",
    "relay": "bench.relay_backlog",
    "signups": "bench.signup_load",
    "latency": "bench.idle_latency",
    "dramatiq": "bench.dramatiq_noop",
    "reconcile": "bench.reconcile_pass",
    # Issue #11: telemetry readings accepted and rolled up, against bare Celery no-op tasks.
    "telemetry": "bench.telemetry_load",
    "memory": "bench.worker_memory",
}
GROUPS = ("publish", "throughput", *MODULES)
DOC = REPO / "docs" / "benchmarks.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of 30-40 s; numbers are rough")
    parser.add_argument("--reps", type=int, help="repetitions of figure P (default 5; 3 with --quick)")
    parser.add_argument("--throughput-reps", type=int, help="repetitions of figure 1 (default 3)")
    parser.add_argument("--events", type=int, help="events per figure-1 repetition (default 2000; 150 with --quick)")
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="run this figure group only (repeat for several); default: all, in this order: " + ", ".join(GROUPS),
    )
    parser.add_argument("--profile", action="store_true", help="also write cProfile listings of figures P and 1")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run figure 1 on PostgreSQL (127.0.0.1:5432, user postgres, its own database eventdemo_bench)",
    )
    # For the --postgres child run: another database, and its figures to a file instead of results/.
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--figures-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--update-doc", action="store_true", help=f"put the table into {DOC.relative_to(REPO)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    args.throughput_reps = args.throughput_reps or 3
    args.events = args.events or (150 if args.quick else 2000)
    if min(args.reps, args.throughput_reps) < 1 or args.events < 1:
        parser.error("repetitions and events must be positive")
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that every finally block stops what it started


def run_publish(env: BenchEnv, args: argparse.Namespace, profile_out: list[str]) -> dict[str, Any]:
    from bench import naive, profiling, publish_cost, report

    calls = (100, 60, 40) if args.quick else (600, 300, 200)
    results: dict[str, Any] = {}
    for figure in publish_cost.figures(*calls):
        say(f"figure {figure.key}: {args.reps} x {figure.calls} calls per side")
        publish_cost.warm_up(env, figure, calls=max(20, figure.calls // 10))
        reps = []
        for rep in range(args.reps):
            reps.append(publish_cost.measure(env, figure, rep))
            c, b = reps[-1]["candidate"], reps[-1]["baseline"]
            say(f"  rep {rep + 1}: median {c.median_us:,.0f} vs {b.median_us:,.0f} µs")
        results[figure.key] = report.latency_figure(figure.title, figure.candidate.name, figure.baseline.name, reps)
    if args.profile:
        start = 10_000_000
        phases = profiling.publish_phases(calls[0], start)
        results["Pa_publish"]["phases"] = phases
        profile_out.append(profiling.phases_text(phases, calls[0]))
        publish_cost.purge_queues(env, publish_cost.SUBSCRIBER_QUEUES)
        start += calls[0]
        for name, call in (("outbox publish()", publish_cost.outbox_publish), ("naive publish", naive.publish)):
            stats = profiling.profile_calls(call, range(start, start + calls[0]))
            start += calls[0]
            profile_out.append(profiling.summarize(stats, f"figure Pa, {name}, {calls[0]} calls under cProfile"))
            publish_cost.purge_queues(env, publish_cost.SUBSCRIBER_QUEUES)
    return results


def run_throughput(
    env: BenchEnv, sink: SinkProcess, args: argparse.Namespace, profile_out: list[str]
) -> dict[str, Any]:
    from bench import profiling, report, throughput
    from bench.environment import purge_queues

    purge_queues(env, throughput.PIPELINE_QUEUES)
    bench = throughput.Throughput(env, sink, args.events, timeout=max(120.0, args.events * 0.5))
    say(f"figure 1: {args.throughput_reps} x {2 * args.events} deliveries per side")
    reps = []
    for rep in range(args.throughput_reps):
        if rep % 2 == 0:
            runs = {"candidate": bench.pipeline(rep), "baseline": bench.bare(rep)}
        else:
            runs = {"baseline": bench.bare(rep), "candidate": bench.pipeline(rep)}
        reps.append(runs)
        say(f"  rep {rep + 1}: {runs['candidate'].per_second:,.0f} vs {runs['baseline'].per_second:,.0f} deliveries/s")
    results = {"1_pipeline": report.throughput_figure("pipeline, end to end", reps)}
    if args.profile:
        directory = env.run_dir / "profile"
        run = bench.pipeline(args.throughput_reps, profile_dir=directory)
        say(f"  profiled pipeline run: {run.per_second:,.0f} deliveries/s (under cProfile)")
        stats = profiling.load_dumps(directory)
        if stats is not None:
            title = f"figure 1, pipeline pool processes, {2 * args.events} deliveries under cProfile"
            profile_out.append(f"# {title}: where the time goes\n\n{profiling.buckets(stats)}")
            profile_out.append(profiling.summarize(stats, title))
    return results


def run_postgres(args: argparse.Namespace, profile_out: list[str]) -> dict[str, Any]:
    """Figure 2 again, on PostgreSQL, in a child run (settings are read once per process)."""
    from bench import postgres

    say(f"figure 1 on PostgreSQL: a child run on database {postgres.DATABASE}")
    with postgres.database() as url, tempfile.TemporaryDirectory(prefix="eventdemo-bench-pg-") as tmp:
        out = Path(tmp) / "figures.json"
        argv = [sys.executable, "-m", "bench.run", "--only", "throughput", "--database-url", url]
        argv += ["--events", str(args.events), "--throughput-reps", str(args.throughput_reps)]
        argv += ["--figures-out", str(out)] + (["--profile"] if args.profile else [])
        # Killed on timeout; its redis-server, sink and workers die with it.
        reps = args.throughput_reps + (1 if args.profile else 0)
        subprocess.run(argv, cwd=REPO, check=True, timeout=60 + reps * (120 + args.events))
        figure = json.loads(out.read_text())["1_pipeline"]
        profile = out.with_suffix(".profile.txt")
        if profile.exists():
            profile_out.append(profile.read_text().replace("# figure 1,", "# figure 1 on PostgreSQL,"))
    figure["title"] = "pipeline, end to end, on PostgreSQL"
    return {"1_pipeline_postgres": figure}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = datetime.now(UTC).replace(microsecond=0)
    clock = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    if load_start[0] > 0.5:
        say(f"the machine is not idle (load average {load_start[0]:.2f}): expect noisier numbers")
    command = " ".join([".venv/bin/python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    profile_out: list[str] = []
    with world(database_url=args.database_url, keep=args.keep, say=say) as (env, sink):
        from bench import machine, report

        figures: dict[str, Any] = {}
        wanted = args.only or GROUPS
        if "publish" in wanted:
            figures.update(run_publish(env, args, profile_out))
        if "throughput" in wanted:
            figures.update(run_throughput(env, sink, args, profile_out))
        for group, module in MODULES.items():
            if group in wanted:
                figures.update(importlib.import_module(module).measure(env, sink, quick=args.quick, say=say))
        if args.figures_out is not None:
            args.figures_out.write_text(json.dumps(figures))
            if profile_out:
                args.figures_out.with_suffix(".profile.txt").write_text("\n\n".join(profile_out))
            return 0
        postgres_version = ""
        if args.postgres and "throughput" in wanted:
            from bench import postgres

            postgres_version = postgres.server_version()
            figures.update(run_postgres(args, profile_out))

        results = {
            "command": command,
            "quick": args.quick,
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "duration_s": round(time.monotonic() - clock, 1),
            # Other work on the machine shows here; the interleaving cancels slow drift, not bursts.
            "load_average_start": load_start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "machine": machine.describe(redis_version(env.redis_url), postgres_version),
            "source": machine.source(REPO),
            "settings": {
                "groups": list(wanted),
                "repetitions_figure_P": args.reps,
                "repetitions_figure_1": args.throughput_reps,
                "events_figure_1": args.events,
                "database": "SQLite file, WAL, IMMEDIATE transactions (project settings)"
                + ("; figure 1 also on PostgreSQL" if args.postgres else ""),
                "django_debug": False,
                "password_hasher": "MD5 (DJANGO_FAST_PASSWORD_HASHER=1)",
            },
            "figures": figures,
        }
        table = report.markdown_table(figures)
        header = report.machine_lines(results["machine"], results["source"], results["started_at"], command)
        header += (
            f"- load average (1 min) at start and end: {results['load_average_start'][0]:.2f} and "
            f"{results['load_average_end'][0]:.2f} (other work on the machine)\n"
        )
        markdown = header + "\n" + table
        stem = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
        json_path, md_path = report.write(RESULTS, stem, results, markdown)
        if profile_out:
            (RESULTS / f"{stem}-profile.txt").write_text("\n\n".join(profile_out))
        if args.update_doc:
            from bench import chart

            report.update_doc(DOC, markdown)
            chart.draw(figures, CHART, title=f"{results['started_at']}, commit {results['source']['commit'][:12]}")
            say(f"wrote {DOC.relative_to(REPO)} and {CHART.relative_to(REPO)}")
        print(markdown)
        say(f"wrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)} in {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
