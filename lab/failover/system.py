"""The whole system of one lab run, as separate processes: the web, one worker pool per queue, and beat.

The lab process has already pointed its own settings at the run's topology
(lab/failover/run.py); every process started here gets the same environment,
so the web, the workers, beat and the checker all read one database and one
broker. Each process runs in a process group of its own (lab/processes.py):
a fault is done to the services, never to these, and ``pids()`` read before
and after the faults prove that nothing was restarted.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.core.management import call_command

from devinbox.sink import free_port
from lab.processes import Process, WorkerSpec, spawn, start_worker
from project import queues

# Small pools: two cores carry the topology, the web, the workers and the load.
CONCURRENCY = {queue: 1 for queue in queues.WORKER_QUEUES} | {queues.NOTIFICATIONS: 2}


class System:
    """The project's own processes against one topology (``env``), logging under ``directory``."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: list[Process] = []

    def start(self) -> None:
        """Migrate, then start the web, the workers and beat; return once each answers or says it is ready."""
        call_command("migrate", interactive=False, verbosity=0)
        manage = [sys.executable, "manage.py"]
        web = spawn("web", [*manage, "runserver", f"127.0.0.1:{self.port}", "--noreload"], self.env, self.directory)
        self.processes.append(web)
        for queue in queues.WORKER_QUEUES:
            spec = WorkerSpec(queue, (queue,), CONCURRENCY[queue], self.env)
            self.processes.append(start_worker(spec, self.directory, timeout=90))
        schedule = str(self.directory / "celerybeat-schedule")
        beat = [sys.executable, "-m", "celery", "-A", "project", "beat", "-s", schedule, "-l", "INFO"]
        self.processes.append(spawn("beat", beat, self.env, self.directory))
        self._wait_for_web(web)

    def _wait_for_web(self, web: Process, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not web.alive():
                raise RuntimeError(f"the web process exited:\n{web.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise RuntimeError(f"the web did not answer on {self.base_url} in {timeout:.0f} s:\n{web.log()[-3000:]}")

    def pids(self) -> dict[str, int]:
        """Each process's pid, or -1 for one that has exited: compared before and after the faults."""
        return {p.name: (p.pid if p.alive() else -1) for p in self.processes}

    def logs(self) -> dict[str, str]:
        return {p.name: p.log() for p in self.processes}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
