"""The processes a fault test starts, and kills: its own ``redis-server`` and real ``celery worker`` subprocesses.

Every fault test starts its own Redis (so that it can stop it, and so that what a
killed worker leaves behind never reaches another test or the machine's Redis)
and prefork workers pointed at it, each in its own process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CELERY_WORKER, spawn_logged, wait_for, worker_options
from tests.environment import start_redis_server
from tests.faults.provider import ProviderSink


@dataclass
class PrivateRedis:
    """A ``redis-server`` of one test, on its own port, with an append-only file in its own directory."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # appendonly: a stop and start keeps the queues, unacked messages and bindings.
        self.process = start_redis_server(self.port, self.directory, "--appendonly", "yes")

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown or a failover does: the append-only file is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)

    def restart_empty(self) -> None:
        """SIGKILL, then start again on the same port with nothing: a Redis without persistence restarting."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.start()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (a prefork worker's pool processes), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; the parent pid follows its closing parenthesis.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def socket_owner(local_port: int, remote_port: int, candidates: list[int]) -> int | None:
    """Which of the ``candidates`` pids holds the TCP connection ``local_port`` -> ``remote_port`` on 127.0.0.1.

    Both ports are needed: Linux reuses an ephemeral port for connections to other destinations.
    """
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (local_port, remote_port):
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
    return None


@dataclass
class Worker:
    name: str
    queues: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def lost_jobs(self) -> int:
        """Tasks this worker saw die with their pool process (and, acks_late, put back)."""
        return self.log().count("Task handler raised error: WorkerLostError")

    def pool(self) -> list[int]:
        return children_of(self.pid) if self.alive() else []

    def sender(self, sink: ProviderSink) -> tuple[int, int] | None:
        """(pid, client port) of this worker's pool process inside a send to ``sink`` right now, if any."""
        pool = self.pool()
        # Time enough left to find the process and kill it before the provider answers.
        for port in sink.sending_from(at_least=0.2):
            owner = socket_owner(port, sink.port, pool)
            if owner is not None:
                return owner, port
        return None

    def kill_sender(self, sink: ProviderSink, timeout: float = 30) -> bool:
        """SIGKILL a pool process of this worker in the middle of a send (the worker replaces it).

        True when the connection was lost inside the provider's latency: the process
        died mid-task, before the email was accepted.
        """
        pid, port = wait_for(lambda: self.sender(sink), timeout=timeout, interval=0.002, what=f"{self.name} sending")
        os.kill(pid, signal.SIGKILL)
        return sink.abandoned_before_accepting(port)

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool, at once, as a lost machine would."""
        _signal_group(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL whatever is left of the process group."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        # Pool processes of a main process that was killed outlive it otherwise.
        _signal_group(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class Workers:
    """Real ``celery worker`` subprocesses (prefork) on the private Redis; all stopped at the end."""

    def __init__(self, base_env: dict[str, str], log_dir: Path) -> None:
        self.base_env = base_env
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def spawn(self, name: str, *queues: str, concurrency: int = 2, **env: str) -> Worker:
        log_path = self.log_dir / f"worker-{name}-{len(self.started)}.log"
        command = [*CELERY_WORKER, "-P", "prefork", *worker_options(queues, concurrency, f"{name}-{os.getpid()}@%h")]
        process = spawn_logged(command, {**self.base_env, **env}, log_path)
        worker = Worker(name, queues, process, log_path)
        self.started.append(worker)
        return worker

    def wait_ready(self, *workers: Worker, timeout: float = 45) -> None:
        for worker in workers:
            wait_for(
                lambda w=worker: " ready." in w.log() or not w.alive(), timeout=timeout, what=f"worker {worker.name}"
            )
            if not worker.alive():
                pytest.fail(f"worker {worker.name} exited at start:\n{worker.log()[-4000:]}")

    def start_beat(self, **env: str) -> Worker:
        """``celery beat`` with the project's schedule (relay, reconciler, broker watch), stopped like a worker."""
        log_path = self.log_dir / f"beat-{len(self.started)}.log"
        schedule = self.log_dir / f"beat-schedule-{len(self.started)}"
        command = [*CELERY_WORKER[:-1], "beat", "-s", str(schedule), "-l", "INFO"]
        beat = Worker("beat", (), spawn_logged(command, {**self.base_env, **env}, log_path), log_path)
        self.started.append(beat)
        wait_for(lambda: "beat: Starting..." in beat.log() or not beat.alive(), timeout=30, what="beat started")
        if not beat.alive():
            pytest.fail(f"beat exited at start:\n{beat.log()[-4000:]}")
        return beat

    def start(self, name: str, *queues: str, concurrency: int = 2, **env: str) -> Worker:
        worker = self.spawn(name, *queues, concurrency=concurrency, **env)
        self.wait_ready(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} ({w.log_path.name}) =====\n{w.log()[-6000:]}" for w in self.started)
