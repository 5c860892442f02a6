"""One lab run, in a process of its own: a topology, the whole system on it, load, faults, then the checker.

``python -m lab.failover.run --scenario sentinel --seed 7`` prints one JSON
line (the checker's verdict, the faults done and whether every process of the
system is still the one that started). ``python -m lab.failover`` runs these
one after the other and prints the table. A run is a process of its own
because Django reads its settings once, and each run has its own database,
broker and ports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import django

from devinbox.sink import SmtpSink
from lab.failover.faults import SCHEDULES, Fault, start_topology
from lab.failover.postgres import PostgresCluster

# Seconds, not minutes, as the demos have them (lab/launcher.py): a redelivery
# the reconciler owes comes 20 s after the send, not 15 minutes.
LAB_SETTINGS = {
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "EVENTBUS_RETRY_BASE_DELAY": "0.5",
    "EVENTBUS_RETRY_MAX_DELAY": "5",
    "EVENTBUS_SOFT_TIME_LIMIT": "10",
    "EVENTBUS_TIME_LIMIT": "15",
    "EVENTBUS_REDELIVER_AFTER": "20",
    "EVENTBUS_RECONCILE_INTERVAL": "2",
    "EVENTBUS_RELAY_INTERVAL": "1",
    "EVENTBUS_RELAY_GRACE": "2",
    "EVENTBUS_BROKER_CHECK_INTERVAL": "1",
    "EMAIL_BREAKER_RESET_TIMEOUT": "2",
    "EMAIL_TIMEOUT": "5",
    "EMAIL_RATE_LIMIT": "1000/s",
    "SIGNUP_RATE_LIMIT": "100000/m",
    "SIGNUP_RATE_BURST": "100000",
    "DJANGO_FAST_PASSWORD_HASHER": "1",
    "EVENTDEMO_FAULT_APPS": "0",
    "SITE_URL": "http://lab.invalid",
    "EMAIL_HOST": "127.0.0.1",
    "EMAIL_USE_TLS": "0",
    "EMAIL_HOST_USER": "",
    "EMAIL_HOST_PASSWORD": "",
    "LOG_LEVEL": "INFO",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCHEDULES), required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=4.0, help="sign-ups per second (readings: ten times that)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs) afterwards")
    args = parser.parse_args(argv)
    # Stopped by the lab (its timeout) or anyone else: unwind, so that every process the run started is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    directory = Path(tempfile.mkdtemp(prefix=f"eventdemo-failover-{args.scenario}-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(_remove, directory)
        result = _run(args, directory, stack)
    print(json.dumps(result), flush=True)
    return 0


def _run(args: argparse.Namespace, directory: Path, stack: ExitStack) -> dict[str, Any]:
    database = PostgresCluster(directory / "postgres")
    database.start()
    stack.callback(database.stop)
    topology = start_topology(args.scenario, directory)
    stack.callback(topology.stop)
    sink = SmtpSink()
    sink.start()
    stack.callback(sink.stop)
    os.environ.update(LAB_SETTINGS)
    os.environ.update({"EMAIL_PORT": str(sink.port), "REDIS_KEY_PREFIX": f"lab{args.seed}:"})
    os.environ.update(database.env())
    # The topology names the broker, or leaves it to be derived (Sentinel): never one from the outside.
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.update(topology.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()

    # Models are importable only now that Django is set up.
    from lab.failover.checker import check, wait_until_drained
    from lab.failover.load import Load
    from lab.failover.system import System

    system = System(dict(os.environ), directory / "logs")
    stack.callback(system.stop)
    system.start()
    before = system.pids()
    load = Load(system, args.rate, args.seed)
    load.start()
    rng = random.Random(args.seed)
    faults: list[datetime] = []
    names: list[str] = []
    time.sleep(rng.uniform(3, 5))  # traffic flowing before the first fault
    for name, fault in _shuffled(SCHEDULES[args.scenario], rng):
        names.append(name)
        faults.append(fault(topology, database, rng))
        time.sleep(rng.uniform(3, 6))
    report = load.stop()
    drained = wait_until_drained(args.drain_timeout)
    verdict = check(report, sink, faults)
    after = system.pids()
    same = before == after and all(pid > 0 for pid in after.values())
    return {
        "scenario": args.scenario,
        "seed": args.seed,
        "faults": names,
        "drained": drained,
        "same_processes": same,
        "sign_ups_attempted": report.attempted,
        "readings_accepted": report.readings_accepted,
        **verdict.as_dict(),
    }


def _shuffled(schedule: list[tuple[str, Fault]], rng: random.Random) -> list[tuple[str, Fault]]:
    order = list(schedule)
    rng.shuffle(order)
    return order


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
