"""What `make run` chose, written down so that a command in a second terminal finds the same system.

``make run`` (scripts/run.py) may be given another Redis, other ports or a
``.env`` file; a ``manage.py`` started by hand in another terminal knows none
of that and would read Redis on 6379 and report an empty system. So once
everything is up, ``make run`` writes ``$VAR_DIR/run.json`` (mode 0600: URLs
may carry passwords) and removes it when it stops::

    {"pid": 4242, "run_id": "…", "started_at": "2026-…Z",
     "environment": {"REDIS_URL": "redis://127.0.0.1:6390/0", "EMAIL_PORT": "1025", …},
     "ports": {"web": 8000, "flower": 5555}, "sink": "127.0.0.1:1025"}

``manage.py`` calls :func:`apply` before Django reads its settings: each
variable of ``environment`` that the process's own environment does not set
is taken from the file, and one line on stderr says which. The environment
always wins. A file whose ``pid`` is no longer alive (a ``make run`` killed
with SIGKILL) is ignored with a note. The processes ``make run`` starts
itself (they carry ``EVENTDEMO_RUN_ID``) already have it all and skip the file.

Standard library only: scripts/run.py loads this file by its path, before
anything of Django or Celery is importable.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_NAME = "run.json"
MARKER = "EVENTDEMO_RUN_ID"
"""Set in every process `make run` starts (scripts/run.py)."""

VARIABLES = (
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "REDIS_KEY_PREFIX",
    "DATABASE_URL",
    "EMAIL_HOST",
    "EMAIL_PORT",
    "DEVINBOX_DIR",
    "WEB_PORT",
    "FLOWER_PORT",
    "FLOWER_URL",
    "SITE_URL",
)
"""The variables that say where the system's services are; only these are written and read."""


def default_var_dir(base_dir: Path, environ: Mapping[str, str]) -> Path:
    """``VAR_DIR`` as settings.py reads it: the environment's, else ``var/`` beside manage.py."""
    return Path(environ.get("VAR_DIR") or base_dir / "var")


def write(
    var_dir: Path, environment: Mapping[str, str], *, pid: int, run_id: str, ports: Mapping[str, int], sink: str | None
) -> Path:
    """Write the run file (atomically, mode 0600) with the given variables that are set; returns its path."""
    record: dict[str, Any] = {
        "pid": pid,
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "environment": {name: environment[name] for name in VARIABLES if environment.get(name)},
        "ports": dict(ports),
        "sink": sink,
    }
    path = var_dir / FILE_NAME
    tmp = var_dir / f".{FILE_NAME}.{pid}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)
    return path


def remove(var_dir: Path, *, pid: int) -> None:
    """Remove the run file if this ``pid`` wrote it (a newer run's file is left alone)."""
    path = var_dir / FILE_NAME
    record = _load(path)
    if record is not None and record.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def apply(environ: MutableMapping[str, str], var_dir: Path, note: Callable[[str], None]) -> list[str]:
    """Fill ``environ`` from the run file in ``var_dir`` where it leaves a variable unset; returns their names.

    ``note`` gets one line saying what was taken (or why the file was ignored); nothing when there is no file.
    """
    if environ.get(MARKER):
        return []
    path = var_dir / FILE_NAME
    if not path.exists():
        return []
    record = _load(path)
    shown = _shown(path)
    if record is None or not isinstance(record.get("environment"), dict) or not isinstance(record.get("pid"), int):
        note(f"ignoring {shown}: not a run file that make run wrote")
        return []
    if not alive(record["pid"]):
        note(f"ignoring {shown}: the make run that wrote it (pid {record['pid']}) is no longer running")
        return []
    taken = [
        name
        for name, value in record["environment"].items()
        if name in VARIABLES and isinstance(value, str) and name not in environ
    ]
    for name in taken:
        environ[name] = record["environment"][name]
    if taken:
        note(f"using the running system's {', '.join(taken)} from {shown} (make run, pid {record['pid']})")
    return taken


def _load(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it (``var/run.json``), else in full."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
