"""Driving the system in the fault tests: their settings, sign-ups, probes, and what has arrived.

The processes live in processes.py, the slow provider in provider.py, the
invariant in invariants.py.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.test import Client

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus import redis as eventbus_redis
from eventbus.models import OutboxEvent
from project import queues
from project.celery import app as celery_app
from tests.conftest import REPO, wait_for
from tests.factories import sign_up_via_client
from tests.faults import quorum
from tests.faults.processes import Workers

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


def sign_up_many(count: int, client: Client | None = None) -> list[Any]:
    """Sign ``count`` people up through the real form; returns the responses."""
    client = client or Client()
    return [sign_up_via_client(client) for _ in range(count)]


def unacked() -> int:
    if quorum.current is not None:  # FAULTS_BROKER=quorum: RabbitMQ counts them
        return quorum.current.counts()[1]
    return int(eventbus_redis.client().hlen(settings.REDIS_KEY_PREFIX + "unacked"))


def queue_length(queue: str) -> int:
    if quorum.current is not None:
        return quorum.ready(queue)
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


def settled() -> bool:
    """Nothing more can arrive: no message waits in a queue, none is delivered and unacknowledged.

    On Redis a retry waiting for its countdown is held by its worker, unacknowledged, and a
    message a dead worker held stays in the unacknowledged hash until it is restored: both count.
    """
    queues_empty = all(queue_length(q) == 0 for q in (queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER))
    return queues_empty and unacked() == 0


def wait_until_delivered(sink: SmtpSink, timeout: float) -> None:
    """Wait for every effect, then until every message is settled, so that a late duplicate would be seen too."""
    wait_for(lambda: all_delivered(sink), timeout=timeout, interval=0.2, what="every sign-up emailed and recorded")
    wait_for(settled, timeout=timeout, interval=0.2, what="every message settled: none waiting, none unacknowledged")


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
