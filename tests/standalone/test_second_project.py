"""The bus in a second Django project: nothing of this project's but the ``eventbus`` package.

The project in tests/standalone/hostproject (its own settings, one app with one
event type and one subscriber) is copied into a temporary directory; its
processes see only that directory and this repository's root on their path
(for ``eventbus``), and its INSTALLED_APPS names none of our apps. There it
migrates, publishes an event inside a transaction, and a real ``celery
worker`` of its own Celery app delivers it. The subscriber's row records which
of our modules its process had loaded: none may be.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
TEMPLATE = Path(__file__).resolve().parent / "hostproject"
CELERY_WORKER = (sys.executable, "-m", "celery", "-A", "hostproj", "worker", "-l", "INFO")
OUR_APPS = ("project", "signups", "notifications", "analytics", "telemetry", "ops", "devinbox", "lab")

PUBLISH = """
import sys
from django.db import transaction
from eventbus import publish
from greetings.events import GreetingSent
with transaction.atomic():
    envelope = publish(GreetingSent(name="second"), aggregate="greeting:1")
print("published", envelope.id)
print("loaded:", ",".join(sorted(name for name in {apps!r} if name in sys.modules)))
"""


@pytest.fixture
def second_project(tmp_path: Path) -> Path:
    """The template project in ``tmp_path``, migrated (its app's migration made as a newcomer would)."""
    root = tmp_path / "second"
    shutil.copytree(TEMPLATE, root, ignore=shutil.ignore_patterns("__pycache__"))
    for command in (["makemigrations", "greetings"], ["migrate", "-v", "0"]):
        run(root, "manage.py", *command)
    return root


def environment(root: Path) -> dict[str, str]:
    """Only what the second project needs: its path, its database, this run's Redis under a prefix of its own."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(root)),
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "hostproj.settings",
        "HOSTPROJ_DATABASE": str(root / "db.sqlite3"),
        "HOSTPROJ_REDIS_URL": settings.REDIS_URL,
        "HOSTPROJ_KEY_PREFIX": f"{settings.REDIS_KEY_PREFIX}second:",
    }


def run(root: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=root, env=environment(root), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def worker(second_project: Path) -> Iterator[Path]:
    """A real prefork worker of the second project's Celery app on its queues; stopped (warm) after the test."""
    log = second_project / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*CELERY_WORKER, "-Q", "greetings,eventbus,dead_letter", "-c", "1", "--without-mingle", "--without-gossip"],
            cwd=second_project,
            env=environment(second_project),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text(errors="replace")[-4000:])


def rows(root: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(root / "db.sqlite3", timeout=20) as db:
        return list(db.execute(query))


@pytest.mark.integration
def test_a_second_project_publishes_and_its_worker_delivers_once(second_project: Path, worker: Path) -> None:
    # given: the second project's settings name none of our apps
    installed = run(
        second_project,
        "-c",
        "import django; django.setup(); from django.conf import settings as s; print(s.INSTALLED_APPS)",
    )
    assert not [app for app in OUR_APPS if f"'{app}" in installed], installed

    # when: an event is published inside a transaction, with a worker of that project running
    output = run(second_project, "manage.py", "shell", "-c", PUBLISH.format(apps=OUR_APPS))

    # then: the publishing process loaded none of our modules
    assert "published" in output
    assert output.strip().endswith("loaded:"), output
    # and the subscriber's effect happens, in a worker that loaded none of them either
    effects = wait_for(
        lambda: rows(second_project, "SELECT name, host_modules FROM greetings_greeting"),
        timeout=60,
        what=f"the greeting row (worker log: {worker})",
    )
    assert effects == [("second", "")]
    # and exactly once: one event in the outbox, one delivery in the ledger, one effect
    wait_for(
        lambda: rows(second_project, "SELECT subscriber FROM eventbus_processedevent"),
        timeout=30,
        what="the ledger row",
    )
    assert rows(second_project, "SELECT subscriber FROM eventbus_processedevent") == [("greetings.record",)]
    assert rows(second_project, "SELECT COUNT(*) FROM greetings_greeting") == [(1,)]
    assert rows(second_project, "SELECT COUNT(*) FROM eventbus_outboxevent") == [(1,)]
