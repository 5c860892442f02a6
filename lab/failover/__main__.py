"""``make failover-lab``: every scenario, ``--runs`` seeds each, one line per run, then the verdict.

Each run is a process of its own (lab/failover/run.py) with its own
topology, database and ports; this one starts them one after the other, reads
the JSON line each prints, and prints the table. The exit status is 1 when a
run lost or doubled an effect, left a backlog, needed a process restarted, or
did not finish.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

SCENARIOS = ("sentinel", "rabbitmq", "postgres")
HEADER = (
    f"{'scenario':<9} {'seed':>4} {'committed':>9} {'delivered':>9} {'lost':>4} {'doubled':>7} {'absorbed':>8} "
    f"{'resent':>6} {'fault->1st':>10} {'drained':>8} {'same pids':>9}  faults"
)


def line(result: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    return (
        f"{result['scenario']:<9} {result['seed']:>4} {result['committed']:>9} {result['delivered']:>9} "
        f"{result['lost']:>4} {result['doubled']:>7} {result['absorbed']:>8} {result['redelivered']:>6} "
        f"{seconds(result['fault_to_first_delivery']):>10} {seconds(result['drained_after']):>8} "
        f"{'yes' if result['same_processes'] else 'NO':>9}  {', '.join(result['faults'])}"
    )


def passed(result: dict[str, Any]) -> bool:
    return (
        result["lost"] == 0
        and result["doubled"] == 0
        and result["drained"]
        and result["same_processes"]
        and not result["problems"]
    )


def run_one(scenario: str, seed: int, rate: float, timeout: float, keep: bool) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "lab.failover.run", "--scenario", scenario, "--seed", str(seed)]
    command += ["--rate", str(rate)] + (["--keep"] if keep else [])
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM, not subprocess.run's SIGKILL: the run then stops every process it started.
        run.terminate()
        run.communicate(timeout=120)
        print(f"{scenario:<9} {seed:>4} did not finish in {timeout:.0f} s", flush=True)
        return None
    for text in reversed(stdout.splitlines()):
        if text.startswith("{"):
            return dict(json.loads(text))
    print(f"{scenario:<9} {seed:>4} failed (exit {run.returncode}):\n{stderr[-3000:]}", flush=True)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The failover lab: faults on real topologies, then a checker.")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--runs", type=int, default=1, help="seeds per scenario")
    parser.add_argument("--seed", type=int, default=1, help="the first seed; runs take seed, seed+1, ...")
    parser.add_argument("--rate", type=float, default=4.0, help="sign-ups per second (readings: ten times that)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory and logs")
    args = parser.parse_args(argv)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    print(HEADER, flush=True)
    results: list[dict[str, Any] | None] = []
    for scenario in scenarios:
        for seed in range(args.seed, args.seed + args.runs):
            result = run_one(scenario, seed, args.rate, args.timeout, args.keep)
            results.append(result)
            if result is not None:
                print(line(result), flush=True)
                for problem in result["problems"]:
                    print(f"    {problem}", flush=True)
    failed = [r for r in results if r is None or not passed(r)]
    print(f"{len(results) - len(failed)} of {len(results)} runs: nothing lost, nothing doubled, nothing restarted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
