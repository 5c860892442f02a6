"""A Redis primary, two replicas and three Sentinels on loopback ports, and the faults done to them.

Debian's ``redis-server`` only (``redis-server <file> --sentinel`` for a
Sentinel). Every node and Sentinel has a password (random per topology, in
its configuration file under ``directory``), so the project's processes are
proven to take theirs from REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD. The
Sentinels agree (quorum 2 of 3) that a primary silent for 1 s is down, and a
failover takes a few seconds. Nothing is persisted (``save ""``,
``appendonly no``): asynchronous replication losing the last writes is what
the outbox, the broker watch and the reconciler must cover.

Each process runs in a process group of its own; ``stop()`` kills them all.
Every wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import redis

from devinbox.sink import free_port
from lab.processes import Process, redis_server_binary

DOWN_AFTER_MS = 1000
"""A primary silent this long is subjectively down; with 2 of 3 Sentinels agreeing, failed over."""
FAILOVER_TIMEOUT_MS = 3000
"""Also how soon a Sentinel may fail the same primary over again (twice this): faults may come seconds apart."""
T = TypeVar("T")


class SentinelTopology:
    """One primary, two replicas, three Sentinels (see the module's docstring)."""

    def __init__(self, directory: Path, master_name: str = "eventdemo") -> None:
        self.directory = directory
        self.master_name = master_name
        self.password = secrets.token_hex(16)
        self.sentinel_password = secrets.token_hex(16)
        self.node_ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.nodes: dict[int, Process] = {}
        self.sentinels: dict[int, Process] = {}
        self._killed: int | None = None

    # --- starting and stopping -------------------------------------------------

    def start(self) -> None:
        """Start the nodes (the first is the primary), wait for the replicas to sync, then the Sentinels."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            primary = self.node_ports[0]
            for port in self.node_ports:
                self._start_node(port, replica_of=None if port == primary else primary)
            for port in self.node_ports[1:]:
                _until(lambda p=port: self.node(p).info("replication").get("master_link_status") == "up", 20, "sync")
            for port in self.sentinel_ports:
                self._start_sentinel(port, primary)
            for port in self.sentinel_ports:
                _until(lambda p=port: self._sentinel_knows_all(p), 30, f"Sentinel {port} to see all the others")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node and Sentinel (their groups); safe to call twice."""
        for process in [*self.sentinels.values(), *self.nodes.values()]:
            _signal_group(process.pid, signal.SIGCONT)  # a paused one must be able to die
            process.stop(timeout=5)

    def env(self) -> dict[str, str]:
        """What the project's processes need: the Sentinels, the name, both passwords; the broker is derived."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": self.master_name,
            "REDIS_PASSWORD": self.password,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
            # Only the database index counts behind Sentinel (eventbus/sentinel.py).
            "REDIS_URL": "redis://sentinel/0",
        }

    # --- asking ------------------------------------------------------------------

    def primary(self) -> int:
        """The primary's port, as a majority of the answering Sentinels name it."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            try:
                answer = self._sentinel(port).sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if answer:
                votes[int(answer[1])] = votes.get(int(answer[1]), 0) + 1
        if not votes:
            raise RuntimeError("no Sentinel names a primary")
        return max(votes, key=lambda port: votes[port])

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the node itself says."""
        return str(self.node(port).info("replication")["role"])

    def wait_for_primary_change(self, old_port: int, timeout: float) -> int:
        """The new primary's port, once every Sentinel names it and it says it is a master."""

        def changed() -> int | None:
            named = {self._named_by(port) for port in self.sentinel_ports} - {None}
            if len(named) != 1:
                return None
            (new,) = named
            return new if new != old_port and self.role(new) == "master" else None

        return _until(changed, timeout, f"a primary other than {old_port}")

    # --- the faults ----------------------------------------------------------------

    def kill_primary(self) -> int:
        """kill -9 of the primary; returns its port. ``rejoin()`` later starts it again as a replica."""
        port = self.primary()
        process = self.nodes[port]
        _signal_group(process.pid, signal.SIGKILL)
        process.popen.wait(timeout=10)
        self._killed = port
        return port

    def rejoin(self, timeout: float = 30) -> None:
        """Start the killed node again, empty, as a replica of the current primary, and wait for its sync."""
        if self._killed is None:
            return
        port, self._killed = self._killed, None
        self._start_node(port, replica_of=self.primary())
        _until(lambda: self.node(port).info("replication").get("master_link_status") == "up", timeout, "rejoin")
        # Until every Sentinel sees it as a healthy replica, a failover could pick it while they still
        # think it down (seen: promoted, then marked down, then another replica promoted instead).
        _until(lambda: all(self._healthy_replica(s, port) for s in self.sentinel_ports), timeout, "Sentinels")

    def force_failover(self) -> int:
        """``SENTINEL FAILOVER``: a replica is promoted though the primary is well; returns the old primary."""
        old = self.primary()
        self._sentinel(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", self.master_name)
        return old

    def pause_primary(self, seconds: float, timeout: float = 30) -> int:
        """SIGSTOP the primary for ``seconds`` (at least until it is failed over), then SIGCONT it.

        It comes back believing it is the primary, until the Sentinels make it a
        replica of the new one; a client still connected to it then gets READONLY.
        Returns the new primary's port.
        """
        old = self.primary()
        process = self.nodes[old]
        started = time.monotonic()
        _signal_group(process.pid, signal.SIGSTOP)
        try:
            new = self.wait_for_primary_change(old, timeout)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            _signal_group(process.pid, signal.SIGCONT)
        _until(lambda: self.role(old) == "slave", timeout, f"the resumed node {old} to become a replica")
        return new

    # --- the processes -----------------------------------------------------------------

    def _start_node(self, port: int, replica_of: int | None) -> None:
        data = self.directory / f"redis-{port}"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {data}",
            'save ""',
            "appendonly no",
            f"requirepass {self.password}",
            f"masterauth {self.password}",
        ]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        (data / "redis.conf").write_text("\n".join(lines) + "\n")
        self.nodes[port] = _spawn(f"redis-{port}", [redis_server_binary(), str(data / "redis.conf")], data)
        _until(lambda: self.node(port).ping(), 10, f"redis-server on {port}")

    def _start_sentinel(self, port: int, primary: int) -> None:
        data = self.directory / f"sentinel-{port}"
        data.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {data}",
            f"requirepass {self.sentinel_password}",
            f"sentinel sentinel-pass {self.sentinel_password}",
            f"sentinel monitor {name} 127.0.0.1 {primary} 2",
            f"sentinel auth-pass {name} {self.password}",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {name} 1",
        ]
        # A Sentinel rewrites its configuration file (what it learnt), so each has its own.
        (data / "sentinel.conf").write_text("\n".join(lines) + "\n")
        command = [redis_server_binary(), str(data / "sentinel.conf"), "--sentinel"]
        self.sentinels[port] = _spawn(f"sentinel-{port}", command, data)

    def node(self, port: int) -> redis.Redis:
        """A client of one node (not through the Sentinels), with the nodes' password."""
        return redis.Redis(
            "127.0.0.1", port, password=self.password, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        )

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            "127.0.0.1",
            port,
            password=self.sentinel_password,
            socket_timeout=1,
            socket_connect_timeout=1,
            decode_responses=True,
        )

    def _named_by(self, sentinel: int) -> int | None:
        try:
            answer = self._sentinel(sentinel).sentinel_get_master_addr_by_name(self.master_name)
        except redis.RedisError:
            return None
        return int(answer[1]) if answer else None

    def _healthy_replica(self, sentinel: int, port: int) -> bool:
        replicas = self._sentinel(sentinel).sentinel_slaves(self.master_name)
        return any(int(r["port"]) == port and r["flags"] == "slave" for r in replicas)

    def _sentinel_knows_all(self, port: int) -> bool:
        state = self._sentinel(port).sentinel_master(self.master_name)
        return int(state["num-slaves"]) == 2 and int(state["num-other-sentinels"]) == 2


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _spawn(name: str, command: list[str], directory: Path) -> Process:
    log_path = directory / f"{name}.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Process(name, popen, log_path)


def _until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """``probe()``'s first true answer within ``timeout`` seconds (errors count as not yet); else RuntimeError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = probe()
        except (redis.RedisError, OSError, KeyError):
            answer = None
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)
