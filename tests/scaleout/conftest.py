"""Fixtures of the scale-out tests: two hosts (network namespaces), a Redis and an SMTP sink they reach.

Every fixture undoes what it made in a ``finally``: worker processes killed,
namespaces and veth pairs deleted, the Redis server killed, the sink stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from devinbox.sink import free_port
from eventbus import redis as eventbus_redis
from project import queues
from tests.brokers import using_broker
from tests.conftest import spawn_logged, wait_for, worker_env, worker_options
from tests.environment import start_redis_server
from tests.scaleout import network
from tests.scaleout.network import Host
from tests.scaleout.sink import ProviderSink

# Short timeouts, so that what a lost host leaves behind comes back within the test.
# Settings refuse to start when a retry countdown, a time limit, the breaker's
# reset or a rate-limit wait is not below the visibility timeout (kombu#337).
VISIBILITY_TIMEOUT = 8.0
HOST_ENV = {
    "CELERY_VISIBILITY_TIMEOUT": f"{VISIBILITY_TIMEOUT:g}",
    "EVENTBUS_RETRY_BASE_DELAY": "0.2",
    "EVENTBUS_RETRY_MAX_DELAY": "2",
    # A send takes the provider's latency (2 s in the test) and a few round trips.
    "EMAIL_TIMEOUT": "4",
    "EVENTBUS_SOFT_TIME_LIMIT": "5",
    "EVENTBUS_TIME_LIMIT": "6",
    "EMAIL_BREAKER_RESET_TIMEOUT": "2",
    # The rate limit has tests of its own; here it must never make a task wait.
    "EMAIL_RATE_LIMIT": "1000/s",
}
# Both hosts consume both subscriber queues, as one pool per host would in production.
QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS)


@dataclass
class HostWorker:
    """A ``celery worker`` (prefork) running inside a host's network namespace."""

    name: str
    host: Host
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, *, warm: bool = True) -> None:
        """SIGTERM (warm shutdown) unless ``warm`` is False, then SIGKILL to the whole process group."""
        if warm and self.alive():
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        # The pool processes of a killed main process would outlive it otherwise.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    """The two hosts, the Redis they share (``redis_port``) and the sink; ``start`` runs a worker on a host."""

    hosts: dict[str, Host]
    redis_port: int
    sink: ProviderSink
    log_dir: Path
    workers: list[HostWorker] = field(default_factory=list)

    def env_for(self, host: Host) -> dict[str, str]:
        url = f"redis://{host.root_address}:{self.redis_port}/0"
        return worker_env(
            REDIS_URL=url,
            CELERY_BROKER_URL=url,
            EMAIL_HOST=host.root_address,
            EMAIL_PORT=str(self.sink.port_for(host.root_address)),
            **HOST_ENV,
        )

    def spawn(self, label: str, concurrency: int = 2, **env: str) -> HostWorker:
        host = self.hosts[label]
        name = f"host-{label}"
        log_path = self.log_dir / f"worker-{name}.log"
        launcher = [*host.exec_prefix(), sys.executable, "-m", "tests.scaleout.worker", "-P", "prefork"]
        command = [*launcher, *worker_options(QUEUES, concurrency, f"{name}@%h")]
        process = spawn_logged(command, {**self.env_for(host), **env}, log_path)
        worker = HostWorker(name, host, process, log_path)
        self.workers.append(worker)
        return worker

    def wait_ready(self, *workers: HostWorker, timeout: float = 45) -> None:
        for worker in workers:
            wait_for(
                lambda w=worker: " ready." in w.log() or not w.alive(), timeout=timeout, what=f"{worker.name} ready"
            )
            if not worker.alive():
                pytest.fail(f"{worker.name} exited at start:\n{worker.log()[-4000:]}")

    def stop_all(self) -> None:
        for worker in self.workers:
            # A host that was cut off cannot finish anything: no warm shutdown for it.
            worker.stop(warm=worker.host.is_up())

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} =====\n{w.log()[-6000:]}" for w in self.workers)


def unacknowledged() -> dict[str, dict[str, Any]]:
    """The broker's unacknowledged messages, by task id: task name, queue, args, when they were taken."""
    from django.conf import settings

    client = eventbus_redis.client()
    prefix = settings.REDIS_KEY_PREFIX
    taken = dict(client.zrange(prefix + "unacked_index", 0, -1, withscores=True))
    found = {}
    for tag, raw in client.hgetall(prefix + "unacked").items():
        payload, _exchange, routing_key = json.loads(raw)
        headers = payload.get("headers") or {}
        found[str(headers.get("id"))] = {
            "task": headers.get("task"),
            "queue": routing_key,
            "argsrepr": headers.get("argsrepr") or "",
            "taken_at": taken.get(tag),
        }
    return found


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    """Hosts "a" and "b": a network namespace each, joined to the root namespace by a veth pair."""
    network.delete_leftovers()
    made: list[Host] = []
    try:
        for label, subnet in zip(("a", "b"), network.free_subnets(2), strict=True):
            host = Host(label, subnet)
            made.append(host)
            host.create()
        yield {h.label: h for h in made}
    finally:
        for host in made:
            host.delete()


@pytest.fixture
def cluster(hosts: dict[str, Host], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A Redis on 127.0.0.1 and each host's root-side address, this process (the web) publishing to it;
    an SMTP sink on each root-side address; workers started with ``cluster.spawn``."""
    addresses = [h.root_address for h in hosts.values()]
    port = free_port()
    server = start_redis_server(
        port,
        tmp_path / "redis",
        # Replaces start_redis_server's own --bind 127.0.0.1 (the last bind wins):
        # loopback for this process, the root-side veth addresses for the hosts.
        "--bind",
        "127.0.0.1",
        *addresses,
        # Listening on private addresses only; without a password, protected mode would refuse the hosts.
        "--protected-mode",
        "no",
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with ExitStack() as stack:
            stack.enter_context(override_settings(REDIS_URL=url))
            stack.enter_context(using_broker(url))
            sink = stack.enter_context(ProviderSink(addresses))
            running = Cluster(hosts, port, sink, tmp_path)
            try:
                yield running
            finally:
                running.stop_all()
                report = getattr(request.node, "rep_call", None)
                if report is not None and report.failed:
                    print(running.logs())
    finally:
        server.kill()
        server.wait(timeout=15)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the cluster fixture print the worker logs when the test body failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
