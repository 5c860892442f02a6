"""The fault tests' machinery: a private Redis, real worker processes, and ways to drive the system.

Every fault test starts its own ``redis-server`` (so that it can stop it, and so
that what a killed worker leaves behind never reaches another test or the
machine's Redis) and real ``celery worker`` subprocesses (prefork) pointed at it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from django.conf import settings
from django.test import Client

from analytics.models import AnalyticsEvent
from devinbox.sink import SinkHandler, SmtpSink
from eventbus import redis as eventbus_redis
from eventbus.models import OutboxEvent
from project.celery import app as celery_app
from tests.conftest import REPO, wait_for
from tests.environment import start_redis_server
from tests.factories import sign_up_via_client

# Short timeouts, so that what a fault leaves behind comes back within a test.
# Settings refuse to start when a retry countdown, a time limit, the breaker's
# reset or a rate-limit wait is not below the visibility timeout (kombu#337).
FAULT_ENV = {
    # A message reserved by a worker that died is redelivered this long after it was taken.
    "CELERY_VISIBILITY_TIMEOUT": "6",
    "EVENTBUS_RETRY_BASE_DELAY": "0.2",
    "EVENTBUS_RETRY_MAX_DELAY": "2",
    "EVENTBUS_SOFT_TIME_LIMIT": "3",
    "EVENTBUS_TIME_LIMIT": "4",
    "EMAIL_BREAKER_RESET_TIMEOUT": "2",
    # The sink is local: a send that takes longer is a fault.
    "EMAIL_TIMEOUT": "2",
    # High enough never to wait, except in the rate-limit test, which sets its own.
    "EMAIL_RATE_LIMIT": "1000/s",
    # Workers know the test-only subscribers of tests/faults/faultapp.
    "EVENTDEMO_FAULT_APPS": "1",
}
VISIBILITY_TIMEOUT = float(FAULT_ENV["CELERY_VISIBILITY_TIMEOUT"])

WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


# --- a provider that takes its time ------------------------------------------


class ProviderHandler(SinkHandler):
    """The sink's handler, with a provider's latency before it answers MAIL FROM (nothing accepted yet).

    ``waiting`` holds the client ports of the sends inside that latency; ``abandoned``
    those whose client went away during it: a process killed there died mid-send,
    before the provider took anything.
    """

    latency = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, float] = {}
        """Client port -> when (time.monotonic()) its latency ends."""
        self.abandoned: set[int] = set()

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.latency:
            port = int(session.peer[1])
            self.waiting[port] = time.monotonic() + self.latency
            try:
                await asyncio.sleep(self.latency)
            except asyncio.CancelledError:
                # aiosmtpd cancels the handler when the connection is lost.
                self.abandoned.add(port)
                raise
            finally:
                self.waiting.pop(port, None)
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


class ProviderSink(SmtpSink):
    """An SmtpSink whose ``latency`` (seconds, default 0) slows every send down before anything is accepted."""

    def __init__(self) -> None:
        super().__init__(port=0)
        self.handler = ProviderHandler()

    @property
    def latency(self) -> float:
        return self.handler.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.handler.latency = seconds

    def sending_from(self, at_least: float = 0.0) -> set[int]:
        """Client ports of the sends inside the latency, with at least ``at_least`` seconds of it left."""
        now = time.monotonic()
        return {port for port, ends in dict(self.handler.waiting).items() if ends - now >= at_least}

    def abandoned_before_accepting(self, port: int, timeout: float = 5) -> bool:
        """Whether the client on ``port`` went away inside the latency (waits until the sink knows)."""
        wait_for(lambda: port not in self.handler.waiting, timeout=timeout, what=f"the sink done with port {port}")
        return port in self.handler.abandoned


# --- a private Redis ---------------------------------------------------------


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


# --- worker processes --------------------------------------------------------


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

    def kill_sender(self, sink: ProviderSink, timeout: float = 10) -> bool:
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
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-P",
            "prefork",
            "-Q",
            ",".join(queues),
            "-c",
            str(concurrency),
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ]
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**self.base_env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: the test can kill the worker and its pool at once.
                start_new_session=True,
            )
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

    def start(self, name: str, *queues: str, concurrency: int = 2, **env: str) -> Worker:
        worker = self.spawn(name, *queues, concurrency=concurrency, **env)
        self.wait_ready(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} ({w.log_path.name}) =====\n{w.log()[-6000:]}" for w in self.started)

    def grep(self, text: str) -> list[str]:
        return [line for w in self.started for line in w.log().splitlines() if text in line]


# --- driving the system ------------------------------------------------------


def sign_up_many(count: int, client: Client | None = None) -> list[Any]:
    """Sign ``count`` people up through the real form; returns the responses."""
    client = client or Client()
    return [sign_up_via_client(client) for _ in range(count)]


def unacked() -> int:
    return int(eventbus_redis.client().hlen(settings.REDIS_KEY_PREFIX + "unacked"))


def queue_length(queue: str) -> int:
    return int(eventbus_redis.client().llen(settings.REDIS_KEY_PREFIX + queue))


def welcome_id(event_id: object) -> str:
    return f"<welcome.{event_id}@testserver>"


def signed_up_events() -> list[str]:
    return [str(i) for i in OutboxEvent.objects.filter(type="user.signed_up").values_list("id", flat=True)]


def all_delivered(sink: SmtpSink) -> bool:
    """Every committed sign-up has its email and its analytics row (duplicates or not)."""
    events = signed_up_events()
    arrived = {m.message_id for m in sink.messages}
    recorded = {str(e) for e in AnalyticsEvent.objects.filter(type="user.signed_up").values_list("event_id", flat=True)}
    return all(welcome_id(e) in arrived and e in recorded for e in events)


def wait_until_delivered(sink: SmtpSink, timeout: float, quiet: float = 1.5) -> None:
    """Wait for every effect, then for ``quiet`` seconds more, so that a late duplicate is seen too."""
    wait_for(lambda: all_delivered(sink), timeout=timeout, interval=0.2, what="every sign-up emailed and recorded")
    time.sleep(quiet)


def probe_wire(label: str) -> dict[str, Any]:
    """A ``faults.probe`` event as it travels (this process does not install the fault app)."""
    return {
        "id": str(uuid.uuid4()),
        "type": "faults.probe",
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "aggregate": f"probe:{label}",
        "sequence": 1,
        "correlation_id": f"faults-{label}",
        "causation_id": None,
        "payload": {"label": label},
    }


def send_probe(subscriber_name: str, wire: dict[str, Any], queue: str) -> None:
    """Straight to one fault subscriber's task, by name (point-to-point)."""
    celery_app.send_task(subscriber_name, args=(wire,), queue=queue, routing_key=queue)


def manage(workers: Workers, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` as an operator would, with the workers' environment (database, Redis, fault app)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=workers.base_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"$ manage.py {' '.join(args)}\n{result.stdout}{result.stderr}")
    return result
