"""The queues of the system, named in one place.

Settings derive ``task_queues`` from this module; the run command, the worker
commands of docs/running.md and docker-compose start one worker pool per name listed in
``WORKER_QUEUES``. A subscriber names its queue with one of these constants, and
a test checks that every subscriber's queue is declared here.
"""

from __future__ import annotations

NOTIFICATIONS = "notifications"
"""Email. Slow, external, critical: never dropped."""

ANALYTICS = "analytics"
"""Analytics records. Fast, local, sheddable under load."""

TELEMETRY = "telemetry"
"""Device readings, one message per accepted batch, folded into per-minute rollups. Critical: never dropped."""

EVENTBUS = "eventbus"
"""Housekeeping of the event bus itself: the outbox relay, dead-letter retention."""

DEAD_LETTER = "dead_letter"
"""Failed and poison messages, with their failure, on their way to a DeadLetter row."""

WORKER_QUEUES: tuple[str, ...] = (NOTIFICATIONS, ANALYTICS, TELEMETRY, EVENTBUS, DEAD_LETTER)
"""One worker pool each, in this order, in the run command and docker-compose."""

DEFAULT_CONCURRENCY: dict[str, int] = {
    # SMTP waits on the network: a few processes keep the provider busy.
    NOTIFICATIONS: 4,
    # Short database writes; two processes use both cores of a small machine.
    ANALYTICS: 2,
    # Each message carries up to 500 readings folded in one upsert: database
    # bound, like analytics; two processes use both cores of a small machine.
    TELEMETRY: 2,
    # The relay is a single loop that claims rows with a lease; one is enough.
    EVENTBUS: 1,
    # Storing a dead letter is one insert; failures are rare by design.
    DEAD_LETTER: 1,
}
