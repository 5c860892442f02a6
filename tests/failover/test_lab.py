"""The failover lab's scenarios, each run once as ``make failover-lab`` runs it, and its table read back.

Each run is ``python -m lab.failover --scenario <name> --runs 1 --seed <n>``:
its own topology, its own PostgreSQL cluster, the whole system (web, a worker
per queue, beat) under sign-ups and readings while its faults run, then the
checker. The run must print its line with nothing lost, nothing doubled, the
backlog drained and every process the one that started, and exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lab.failover.faults import SCHEDULES
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A run takes about a minute: topology start, system start, faults a few
# seconds apart, drain. The lab's own bound leaves room on a loaded 2-core
# machine; it stops a run that overstays with SIGTERM, and the run then stops
# every process it started. The test's bound on the lab comes after it.
RUN_TIMEOUT = 360


def run_lab(scenario: str, seed: int) -> tuple[int, list[str]]:
    # The lab's processes read their settings from the environment it gives them, not the test run's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DATABASE_URL", "CELERY_BROKER_URL"))}
    command = [sys.executable, "-m", "lab.failover", "--scenario", scenario, "--runs", "1", "--seed", str(seed)]
    command += ["--timeout", str(RUN_TIMEOUT)]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 150, check=False
    )
    print(done.stdout)
    return done.returncode, done.stdout.splitlines()


@pytest.mark.timeout(RUN_TIMEOUT + 180)
@pytest.mark.parametrize(("scenario", "seed"), [("sentinel", 11), ("rabbitmq", 12), ("postgres", 13)])
def test_a_lab_run_loses_nothing_doubles_nothing_and_restarts_nothing(scenario: str, seed: int) -> None:
    status, lines = run_lab(scenario, seed)
    rows = [line.split() for line in lines if line.startswith(scenario)]
    assert len(rows) == 1, f"no table line for {scenario}:\n" + "\n".join(lines)
    row = rows[0]
    # scenario seed committed delivered lost doubled absorbed resent fault->1st drained same-pids faults...
    committed, delivered, lost, doubled = (int(v) for v in row[2:6])
    assert committed > 0 and delivered >= committed, row
    assert (lost, doubled) == (0, 0), row
    assert row[10] == "yes", f"a process of the system was restarted or died: {row}"
    # Every fault of the scenario was done (each one waits for its effect: a new primary, a node back...).
    assert all(name in " ".join(row[11:]) for name, _fault in SCHEDULES[scenario]), row
    assert status == 0, "\n".join(lines)
    assert lines[-1].startswith("1 of 1 runs"), lines[-1]
