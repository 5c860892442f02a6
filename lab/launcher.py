"""The outer half of ``manage.py demo``: a process of the demo's own, with settings of its own.

Django reads its settings once, from the environment, at start; a demo must
not touch the user's database, Redis or mail. So the command picks free
ports and a SQLite file under VAR_DIR/demo/, and runs itself again
(``--inside``) with an environment that points there, with short timeouts
so that retries, breakers and redeliveries play out in seconds. Afterwards it
removes the demo's files (unless ``--keep``) and stops any process the run
left behind: every one carries ``EVENTDEMO_LAB_RUN=<run id>`` in its
environment, the way ``make run`` marks its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from django.conf import settings

from devinbox.sink import free_port

RUN_MARK = "EVENTDEMO_LAB_RUN"

# Seconds, not minutes: what a production system does over an hour, a demo
# shows in a few seconds. The settings' own checks still apply (every retry
# cap, time limit and breaker reset below the visibility timeout, kombu#337).
DEMO_SETTINGS = {
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "EVENTBUS_RETRY_BASE_DELAY": "0.3",
    "EVENTBUS_RETRY_MAX_DELAY": "3",
    "EVENTBUS_SOFT_TIME_LIMIT": "10",
    "EVENTBUS_TIME_LIMIT": "15",
    "EMAIL_BREAKER_RESET_TIMEOUT": "2",
    "EMAIL_TIMEOUT": "5",
    "EMAIL_RATE_LIMIT": "1000/s",
    "EVENTBUS_ORDERING_RECHECK": "0.3",
    # Every dispatch reads the queue's depth afresh, so the high-water mark bites at once.
    "EVENTBUS_QUEUE_DEPTH_CACHE": "0",
    # The demos run the relay themselves (there is no beat): nothing to leave to on-commit dispatch.
    "EVENTBUS_RELAY_GRACE": "0",
    # With no grace, a mark gathered off the request would race the demo's relay: mark in the request.
    "EVENTBUS_MARK_BATCH_SECONDS": "0",
    "DJANGO_FAST_PASSWORD_HASHER": "1",
    "EVENTDEMO_FAULT_APPS": "0",
    "SITE_URL": "http://demo.invalid",
    # The narration is the demo's output; the workers log to files (lab/processes.py).
    "LOG_LEVEL": "ERROR",
}


def demo_files(name: str) -> list[Path]:
    directory = Path(settings.VAR_DIR) / "demo"
    database = directory / f"{name}.sqlite3"
    return [database, Path(f"{database}-wal"), Path(f"{database}-shm"), directory / f"{name}-redis"]


def logs_dir(name: str) -> Path:
    return Path(settings.VAR_DIR) / "demo" / f"{name}-logs"


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def environment(name: str, run_id: str, extra: dict[str, str]) -> dict[str, str]:
    database = demo_files(name)[0]
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    env = dict(os.environ)
    env.update(DEMO_SETTINGS)
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{database}",
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "REDIS_KEY_PREFIX": f"demo-{name}:",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(free_port()),
            "EMAIL_USE_TLS": "0",
            "EMAIL_HOST_USER": "",
            "EMAIL_HOST_PASSWORD": "",
            RUN_MARK: run_id,
        }
    )
    env.update(extra)
    return env


def leftovers(run_id: str) -> list[int]:
    """Pids of processes that carry this run's mark, read from /proc (Linux)."""
    mark = f"{RUN_MARK}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def launch(name: str, extra_env: dict[str, str], keep: bool, say: Callable[[str], None] = print) -> int:
    """Run demo ``name`` in a process of its own; returns its exit status (0 for PASS)."""
    run_id = uuid.uuid4().hex
    remove([*demo_files(name), logs_dir(name)])
    Path(settings.VAR_DIR, "demo").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "demo", name, "--inside"]
    say(f"demo {name}: run {run_id}; its processes carry {RUN_MARK}={run_id}")
    inner = subprocess.Popen(command, cwd=settings.BASE_DIR, env=environment(name, run_id, extra_env))
    try:
        status = inner.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached the demo too: let it stop what it started.
        try:
            status = inner.wait(timeout=30)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            inner.kill()
            status = inner.wait()
    stray = leftovers(run_id)
    for pid in stray:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if stray:
        say(f"demo {name}: stopped {len(stray)} process(es) it left behind: {stray}")
    if keep:
        say(f"demo {name}: data kept in {demo_files(name)[0]}, logs in {logs_dir(name)}")
    else:
        remove(demo_files(name))
        if status == 0:
            remove([logs_dir(name)])
            say(f"demo {name}: nothing left running; its database and Redis data are removed")
        else:
            say(f"demo {name}: nothing left running; worker logs kept in {logs_dir(name)}")
    return status
