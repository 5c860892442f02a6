"""A RabbitMQ node of the lab's own: one node (not a cluster), on free loopback ports, in a directory of its own.

One node, not three: the machine has two cores for the topology, the web, the
workers and the load, and three Erlang VMs would take most of them. A quorum
queue on one node still has everything the profile relies on (its log on disk,
its delivery limit, at-least-once dead-lettering, the delayed-delivery chain),
but no replica to fail over to: the fault here is the node stopping, and what
is proven is that nothing is lost while it is away and that every process picks
up again by itself once it is back.

The node runs as a child of this process (``rabbitmq-server`` from Debian's
package, not the init script, which would switch to the ``rabbitmq`` user and
the machine's node), with its own node name, AMQP and distribution ports,
database, logs, config, enabled-plugins file (none: no management plugin) and
Erlang cookie (HOME is its directory). The machine's RabbitMQ is never touched;
the shared ``epmd`` only learns one more name.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path

from devinbox.sink import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


class RabbitNode:
    """``start()``, ``stop_node()`` / ``start_node()`` (the fault), ``stop()`` (teardown); ``url``, ``env()``."""

    def __init__(self, directory: Path, start_timeout: float = 90.0) -> None:
        self.directory = directory
        self.start_timeout = start_timeout
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"eventdemo-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None
        """Seconds the last ``start()`` took, from spawning the VM to an AMQP handshake."""

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """What the project's processes need: this node as broker, with the quorum profile."""
        return {"CELERY_BROKER_URL": self.url, "EVENTBUS_QUEUE_TYPE": "quorum"}

    def _environment(self) -> dict[str, str]:
        base = self.directory
        return {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie of this node and of rabbitmqctl talking to it
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }

    def start(self) -> None:
        """Write the node's files, start it, and return once it answers AMQP (bounded by ``start_timeout``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cookie = self.directory / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o600)
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            # The lab's disk is a temporary directory: the default 50 MB alarm is fine, the relative
            # memory mark too; the node logs to a file only, which Process logs are next to.
            "log.console = false\nlog.file.level = info\n"
            # Queue counts (rabbitmqctl list_queues) refreshed every second, not every 5 s: tests read them.
            "collect_statistics_interval = 1000\n"
        )
        began = time.monotonic()
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 (the node writes to it until stop())
        self.process = subprocess.Popen(
            [SERVER], env=self._environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait_for_amqp(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began

    def stop_node(self, timeout: float = 60.0) -> None:
        """The fault: ``rabbitmqctl stop_app``. Every listener and connection closes, the queues stop; the Erlang
        VM stays, so ``start_node()`` takes seconds (a cold start is mostly the VM booting).

        For a client it is a stopped node: connections reset, new ones refused. The queues' data stays on disk.
        """
        self._ctl("stop_app", timeout=timeout)
        if self.answers():
            raise RuntimeError(f"RabbitMQ node {self.node} still accepts connections after stop_app")

    def start_node(self, timeout: float = 60.0) -> None:
        """``rabbitmqctl start_app``, then wait until it answers AMQP again."""
        self._ctl("start_app", timeout=timeout)
        self._wait_for_amqp(timeout)

    def stop(self) -> None:
        """Teardown: ``rabbitmqctl stop`` (the VM exits), then the process group killed if anything is left."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with suppress(Exception):
                self._ctl("stop", timeout=30)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        """The node's own log (for a failed test's report)."""
        files = sorted((self.directory / "log").glob("*.log")) if (self.directory / "log").exists() else []
        return "\n".join(path.read_text(errors="replace")[-5000:] for path in files)

    def queues(self) -> dict[str, tuple[int, int]]:
        """Each queue of the node's default vhost: (ready, unacknowledged) messages, as RabbitMQ counts them."""
        out = self._ctl("list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged")
        found = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3:
                found[fields[0]] = (int(fields[1]), int(fields[2]))
        return found

    def _ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [CTL, "-n", self.node, "-q", *args],
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def answers(self) -> bool:
        """Whether the node completes an AMQP handshake (a listening port alone is not enough)."""
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
        return True

    def _wait_for_amqp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.node} exited while starting:\n{self.log()}")
            if _port_open(self.port) and self.answers():
                return
            time.sleep(0.25)
        raise RuntimeError(f"RabbitMQ node {self.node} did not answer on port {self.port} in {timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
