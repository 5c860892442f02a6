"""The fault suite on RabbitMQ with quorum queues (``FAULTS_BROKER=quorum``), instead of its private Redis as broker.

Each test gets a fresh vhost on the machine's RabbitMQ (its queues, delayed-delivery
exchanges and nothing left from another test) and the processes run the quorum profile
(EVENTBUS_QUEUE_TYPE=quorum, eventbus/celery_settings.py). The private Redis stays: it
holds the bus's own keys (counters, limiters, breakers). Run it with::

    FAULTS_BROKER=quorum EVENTBUS_QUEUE_TYPE=quorum \\
      TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/eventdemo_faults_quorum \\
      .venv/bin/python -m pytest -q -p no:cacheprovider tests/faults

(TEST_BROKER_URL only has to be an amqp:// URL for the settings to load with the quorum
profile; each test then moves to a vhost of its own.) Tests that fault the Redis broker
itself are skipped, each saying why (``REDIS_BROKER_ONLY``).
"""

from __future__ import annotations

import os
import subprocess
import uuid

ENABLED = os.environ.get("FAULTS_BROKER", "redis") == "quorum"
AMQP_HOST = os.environ.get("FAULTS_AMQP_HOST", "127.0.0.1:5672")
CTL = "rabbitmqctl"

REDIS_BROKER_ONLY = {
    "test_broker_outage": "stops and restarts the private Redis as the broker (RabbitMQ's node stop: "
    "tests/failover/test_quorum.py)",
    "test_telemetry_broker_outage": "stops the private Redis as the broker (RabbitMQ's node stop: "
    "tests/failover/test_quorum.py)",
    "test_broker_data_loss": "empties a Redis broker without persistence; a quorum queue keeps its log on disk",
    "test_request_path_hang": "pauses the Redis broker and proxies its protocol",
    "test_batch_worker_killed": "about kombu's Redis BRPOP gap and the Redis unacked hash a batch is held in",
}


def _ctl(*args: str) -> None:
    subprocess.run([CTL, "-q", *args], check=True, capture_output=True, timeout=60)


class Vhost:
    """A vhost of one test on the machine's RabbitMQ, guest allowed; deleted afterwards with all it holds."""

    def __init__(self) -> None:
        self.name = f"eventdemo_faults_{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{AMQP_HOST}/{self.name}"

    def create(self) -> None:
        _ctl("add_vhost", self.name)
        _ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        subprocess.run([CTL, "-q", "delete_vhost", self.name], capture_output=True, timeout=60)

    def counts(self, queue: str | None = None) -> tuple[int, int]:
        """(ready, unacknowledged) messages in ``queue``, or summed over the vhost's queues."""
        columns = ("name", "messages_ready", "messages_unacknowledged")
        done = subprocess.run(
            [CTL, "-q", "list_queues", "-p", self.name, "--no-table-headers", *columns],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        ready = unacked = 0
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and (queue is None or fields[0] == queue):
                ready += int(fields[1])
                unacked += int(fields[2])
        return ready, unacked


def ready(queue: str) -> int:
    """Messages waiting in ``queue`` (not those delivered and unacknowledged): a passive declare, milliseconds
    where ``rabbitmqctl`` takes half a second (tests poll this while signing people up)."""
    from project.celery import app

    with app.connection_for_write() as connection:
        return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)


current: Vhost | None = None
"""The running test's vhost (set by the ``private_redis`` fixture), read by tests/faults/harness.py."""
