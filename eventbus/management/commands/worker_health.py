"""``manage.py worker_health``: is this host's worker consuming? For a supervisor's or an orchestrator's health check.

Exit 0: healthy (each worker checked finished a task lately, or nothing waits
in its queues); 1: stalled, one line per stalled worker saying why
(eventbus/observability/stalls.py); 2: cannot tell, within ``--timeout``
seconds: Redis or the broker did not answer, or no worker checked has
reported (not started yet, or gone). An orchestrator restarts a worker on 1
only: a Redis outage (2) is no reason to restart every worker.

Checks the workers of this host (node names ``*@<hostname>``, as
compose/start-worker names them), or those named by ``--worker``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from eventbus.observability import progress, stalls

HEALTHY, STALLED, UNKNOWN = 0, 1, 2


def verdict(workers: list[str] | None, host: str) -> tuple[int, list[str]]:
    """The exit status and the lines to print."""
    if workers:
        found = stalls.worker_health(workers)
        missing = sorted(set(workers) - {health.worker for health in found})
    else:
        mine = [p.worker for p in progress.read() if p.worker.endswith("@" + host)]
        found = stalls.worker_health(mine) if mine else []
        missing = [] if found else [f"*@{host}"]
    if missing:
        return UNKNOWN, [
            f"cannot tell: no progress of {', '.join(missing)} in the last {progress.RECORD_TTL:g}s "
            "(not started yet, or gone)"
        ]
    stalled = [health.reason for health in found if health.stalled]
    if stalled:
        return STALLED, stalled
    return HEALTHY, [health.reason for health in found]


class Command(BaseCommand):
    help = "Exit 0 when this host's workers consume, 1 when one is stalled (saying why), 2 when it cannot tell."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--worker", action="append", default=None, help="a worker's node name, e.g. notifications@web-1 (repeat)"
        )
        parser.add_argument("--host", default=socket.gethostname(), help="check the workers *@HOST (default: this)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds before answering 2 (default 5)")

    def handle(self, *args: Any, worker: list[str] | None, host: str, timeout: float, **options: Any) -> None:
        answer: list[tuple[int, list[str]]] = []

        def check() -> None:
            try:
                answer.append(verdict(worker, host))
            except Exception as exc:  # Redis or the broker: the health check cannot tell
                answer.append((UNKNOWN, [f"cannot tell: {type(exc).__name__}: {' '.join(str(exc).split())}"]))

        # A daemon thread: a broker client that keeps reconnecting cannot hold the answer past the bound.
        thread = threading.Thread(target=check, name="worker-health", daemon=True)
        thread.start()
        thread.join(timeout)
        code, lines = (
            answer[0] if answer else (UNKNOWN, [f"cannot tell: no answer from Redis or the broker in {timeout:g}s"])
        )
        (self.stdout if code == HEALTHY else self.stderr).write("\n".join(lines))
        if thread.is_alive():
            # Leave without waiting for the stuck client's clean-up at exit.
            self.stdout.flush()
            self.stderr.flush()
            os._exit(code)
        sys.exit(code)
