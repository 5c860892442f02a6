"""Each scenario's topology and its schedule of faults.

A scenario names what carries the messages and the bus's keys; the lab's
PostgreSQL cluster (lab/failover/postgres.py) is always there. A run shuffles
its scenario's faults with its seed and waits a seeded few seconds between
them (lab/failover/run.py), so two seeds fault the system in two orders.

- ``sentinel``: Redis primary, two replicas, three Sentinels; broker and keys
  both follow the primary. Faults: kill -9 of the primary, a forced
  ``SENTINEL FAILOVER``, the primary paused past the Sentinels' patience and
  then resumed (it comes back as a replica that answers READONLY).
- ``rabbitmq``: a RabbitMQ node of the lab's own with quorum queues as the
  broker, a plain Redis for the keys. Fault: the node stopped, then started.
- ``postgres``: a plain Redis as broker and keys. Faults: PostgreSQL stopped
  fast (SIGINT) and immediately (a crash), each started again seconds later.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from devinbox.sink import free_port
from lab.failover.postgres import PostgresCluster
from lab.failover.rabbitmq import RabbitNode
from lab.failover.sentinel import SentinelTopology
from lab.processes import Process, redis_server_binary
from scripts.redis_server import redis_answers


class Topology(Protocol):
    def env(self) -> dict[str, str]: ...

    def stop(self) -> None: ...


class PlainRedis:
    """One redis-server with an append-only file (what ``make run`` starts)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        data = directory / "redis"
        data.mkdir(parents=True)
        command = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data)]
        command += ["--save", "", "--appendonly", "yes"]
        # Not lab.processes.start_redis: that reads Django's settings, which must wait for this topology's env.
        log = open(data / "redis.log", "ab")  # noqa: SIM115 (the process writes to it until stop())
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.process = Process("redis", popen, data / "redis.log")
        deadline = time.monotonic() + 10
        while not redis_answers("127.0.0.1", self.port, timeout=0.5):
            if not self.process.alive() or time.monotonic() > deadline:
                self.process.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.process.log()[-2000:]}")
            time.sleep(0.05)

    def env(self) -> dict[str, str]:
        url = f"redis://127.0.0.1:{self.port}/0"
        return {"REDIS_URL": url, "CELERY_BROKER_URL": url}

    def stop(self) -> None:
        self.process.stop()


class QuorumBroker:
    """RabbitMQ with quorum queues carrying the messages, a plain Redis holding the bus's keys."""

    def __init__(self, directory: Path) -> None:
        self.redis = PlainRedis(directory)
        self.node = RabbitNode(directory / "rabbitmq")
        try:
            self.node.start()
        except BaseException:
            self.redis.stop()
            raise

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.env()["REDIS_URL"], **self.node.env()}

    def stop(self) -> None:
        self.node.stop()
        self.redis.stop()


def start_topology(scenario: str, directory: Path) -> Topology:
    if scenario == "sentinel":
        sentinel = SentinelTopology(directory / "sentinel")
        sentinel.start()
        return sentinel
    if scenario == "rabbitmq":
        return QuorumBroker(directory)
    return PlainRedis(directory)


Fault = Callable[[Topology, PostgresCluster, random.Random], datetime]
"""Does one fault, waits for its effect (a new primary, a node back), and returns when it struck."""


def _kill_primary(topology: Topology, database: PostgresCluster, rng: random.Random) -> datetime:
    assert isinstance(topology, SentinelTopology)
    old = topology.primary()
    at = datetime.now(UTC)
    topology.kill_primary()
    topology.wait_for_primary_change(old, timeout=30)
    topology.rejoin()
    return at


def _forced_failover(topology: Topology, database: PostgresCluster, rng: random.Random) -> datetime:
    assert isinstance(topology, SentinelTopology)
    old = topology.primary()
    at = datetime.now(UTC)
    topology.force_failover()
    topology.wait_for_primary_change(old, timeout=30)
    return at


def _paused_primary(topology: Topology, database: PostgresCluster, rng: random.Random) -> datetime:
    assert isinstance(topology, SentinelTopology)
    at = datetime.now(UTC)
    topology.pause_primary(rng.uniform(4, 6))
    return at


def _rabbit_node_stopped(topology: Topology, database: PostgresCluster, rng: random.Random) -> datetime:
    assert isinstance(topology, QuorumBroker)
    topology.node.stop_node()
    at = datetime.now(UTC)  # stop_app takes seconds, and the node serves until it returns
    time.sleep(rng.uniform(3, 6))
    topology.node.start_node()
    return at


def _postgres_stopped(mode: str) -> Fault:
    def fault(topology: Topology, database: PostgresCluster, rng: random.Random) -> datetime:
        database.stop_server(mode=mode)
        at = datetime.now(UTC)  # the server is down once pg_ctl returns
        time.sleep(rng.uniform(3, 6))
        database.start_server()
        return at

    return fault


SCHEDULES: dict[str, list[tuple[str, Fault]]] = {
    "sentinel": [
        ("kill -9 primary", _kill_primary),
        ("SENTINEL FAILOVER", _forced_failover),
        ("primary paused", _paused_primary),
    ],
    "rabbitmq": [("node stopped", _rabbit_node_stopped)],
    "postgres": [
        ("postgres stopped (fast)", _postgres_stopped("fast")),
        ("postgres stopped (immediate)", _postgres_stopped("immediate")),
    ],
}
