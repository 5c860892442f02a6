"""How long a test waits for something the system promises will happen: derived from the settings it follows from.

These are liveness bounds, not speed assertions: each one only keeps a test
from waiting forever for a promise that was broken, and it is derived from the
setting or constant that makes the promise, plus ``MARGIN`` for a loaded
machine (the suite runs on 2 shared cores). How fast something happens is
measured in bench/, never asserted in a test.
"""

from __future__ import annotations

from django.conf import settings

from scripts.supervisor import STOP_GRACE

MARGIN = 15.0
"""Seconds added to a bound that spans processes: their start-up and scheduling on a loaded machine."""

REQUEST_MARGIN = 1.0
"""Seconds added to a bound on one request in the test's own process: its own work (a form, a row)."""


def stop_deadline() -> float:
    """Ctrl-C to the run command until its last process is gone.

    The supervisor (scripts/supervisor.py) SIGTERMs everything but Redis, SIGKILLs
    what is left after STOP_GRACE, then does the same for Redis: two graces at most.
    """
    return 2 * STOP_GRACE + MARGIN


def broker_refusal() -> float:
    """One call to a broker (or the bus's Redis) that refuses it: a connection bounded by
    EVENTBUS_PUBLISH_TIMEOUT, no retry (project/settings.py, eventbus/redis.py)."""
    return settings.EVENTBUS_PUBLISH_TIMEOUT + REQUEST_MARGIN


def request_with_broker_down() -> float:
    """One request that publishes (a sign-up, a telemetry batch) while the broker refuses connections.

    The request meets the broker at most twice (the queue-depth check of backpressure
    and the publish), each bounded by EVENTBUS_PUBLISH_TIMEOUT with no retry
    (project/settings.py), and then answers: the outbox keeps the event.
    """
    return 2 * settings.EVENTBUS_PUBLISH_TIMEOUT + REQUEST_MARGIN


def rate_limited(items: int, tokens_per_second: float) -> float:
    """``items`` calls through a token bucket of ``tokens_per_second`` until the last is granted.

    A bucket grants one token per 1/rate seconds at least (its burst only makes it sooner).
    """
    return items / tokens_per_second + MARGIN


DEMO_RUN = 90.0
"""A whole ``manage.py demo`` run. Not derived from one setting: a demo ends itself, each
of its waits bounded (lab/stage.py ``Stage.wait``, lab/processes.py ``start_worker``);
this only keeps a demo that hung from hanging the suite."""
