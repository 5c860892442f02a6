"""Every demo of the patterns lab, run as a newcomer runs it: ``manage.py demo <name>``, for real.

Each run starts its own redis-server, SMTP sink and worker subprocesses
(lab/stage.py); the test reads its verdict line and then the database the
demo kept (``--keep``), and checks that no process of the run is left.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.launcher import RUN_MARK, leftovers
from lab.narration import VERDICT
from tests import bounds
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What each demo must have left in its database: (SQL, expected value).
DATABASE_CHECKS: dict[str, list[tuple[str, object]]] = {
    "fanout": [
        ("SELECT count(*) FROM eventbus_outboxevent WHERE status = 'dispatched'", 1),
        ("SELECT count(*) FROM eventbus_processedevent", 2),
        ("SELECT count(*) FROM analytics_analyticsevent", 1),
    ],
    "duplicates": [
        ("SELECT count(*) FROM eventbus_processedevent", 2),
        ("SELECT count(*) FROM eventbus_deliverystep WHERE step = 'duplicate'", 4),
        ("SELECT count(*) FROM analytics_analyticsevent", 1),
    ],
    "retry": [
        ("SELECT count(*) FROM eventbus_deliverystep WHERE step = 'retried'", 3),
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 1),
        ("SELECT count(*) FROM eventbus_deadletter", 0),
    ],
    "deadletter": [
        (
            "SELECT group_concat(kind, ',') FROM (SELECT kind FROM eventbus_deadletter ORDER BY kind)",
            "permanent,poison",
        ),
        ("SELECT count(*) FROM eventbus_deadletterreplay", 2),
        ("SELECT count(*) FROM eventbus_deadletterreplay WHERE skipped_by_ledger", 1),
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 1),
    ],
    "breaker": [
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 3),
        ("SELECT count(*) > 0 FROM eventbus_deliverystep WHERE detail LIKE 'circuit breaker smtp is open%'", 1),
        ("SELECT count(*) FROM eventbus_deadletter", 0),
    ],
    "backpressure": [
        ("SELECT count(*) FROM eventbus_outboxevent WHERE status = 'dispatched'", 10),
        ("SELECT count(*) FROM eventbus_processedevent WHERE outcome = 'shed'", 7),
        ("SELECT count(*) FROM analytics_analyticsevent", 3),
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 10),
    ],
    "ordering": [
        (
            "SELECT group_concat(sequence, ',') FROM (SELECT sequence FROM eventbus_processedevent "
            "WHERE subscriber = 'analytics.record_event' ORDER BY processed_at, id)",
            "1,2",
        ),
        ("SELECT count(*) > 0 FROM eventbus_deliverystep WHERE detail LIKE 'waiting for an earlier event%'", 1),
    ],
    "outbox": [
        ("SELECT count(*) FROM eventbus_outboxevent WHERE status = 'dispatched' AND dispatch_attempts >= 2", 3),
        ("SELECT count(*) FROM analytics_analyticsevent", 3),
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 3),
    ],
    "versions": [
        ("SELECT count(*) FROM analytics_analyticsevent WHERE json_extract(properties, '$.channel') = 'web'", 3),
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 3),
        (
            "SELECT group_concat(kind, ',') FROM (SELECT kind FROM eventbus_deadletter ORDER BY kind)",
            "permanent,poison",
        ),
        ("SELECT count(*) FROM eventbus_outboxevent WHERE version = 1 AND status = 'dispatched'", 1),
    ],
    "crash": [
        ("SELECT count(*) FROM eventbus_processedevent WHERE subscriber = 'notifications.send_welcome_email'", 1),
        ("SELECT count(*) FROM eventbus_deadletter", 0),
    ],
}


def demo_command(name: str, *options: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), "demo", name, *options]


def run_id_of(output: str) -> str:
    marker = f"{RUN_MARK}="
    return output.split(marker, 1)[1].split()[0]


def test_every_demo_is_tested() -> None:
    from lab import demos

    assert set(DATABASE_CHECKS) == set(demos.NAMES)


def test_list_names_every_demo() -> None:
    from lab import demos

    result = subprocess.run(demo_command("--list"), cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(demos.NAMES)


@pytest.mark.parametrize("name", list(DATABASE_CHECKS))
def test_demo(name: str) -> None:
    # when
    result = subprocess.run(
        demo_command(name, "--keep"), cwd=REPO, capture_output=True, text=True, timeout=bounds.DEMO_RUN
    )
    print(result.stdout, result.stderr)

    # then: the verdict line
    verdicts = VERDICT.findall(result.stdout)
    assert verdicts, f"no verdict line:\n{result.stdout}\n{result.stderr}"
    outcome, demo, summary = verdicts[-1]
    assert (outcome, demo) == ("PASS", name), summary
    assert result.returncode == 0

    # then: nothing of the run is left running
    assert leftovers(run_id_of(result.stdout)) == []

    # then: the database the demo kept
    database = Path(os.environ["VAR_DIR"]) / "demo" / f"{name}.sqlite3"
    with sqlite3.connect(database) as connection:
        for sql, expected in DATABASE_CHECKS[name]:
            assert connection.execute(sql).fetchone()[0] == expected, sql


def _ctrl_c_as_in_a_terminal() -> None:
    """Ctrl-C's default action, as a terminal's foreground job has it. A test runner started as a
    background job of a shell without job control (``cmd &`` in a script) ignores SIGINT, and
    every process it starts would inherit that: Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_everything() -> None:
    # given: a demo under way, its worker running
    process = subprocess.Popen(
        demo_command("crash"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "worker crash ready" in line:
            break

    # when: Ctrl-C, as a terminal sends it to the foreground process group
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest

    # then
    assert process.returncode == 1, output
    assert "verdict: FAIL crash — interrupted" in output
    assert leftovers(run_id_of(output)) == []
    assert not (Path(os.environ["VAR_DIR"]) / "demo" / "crash.sqlite3").exists()
