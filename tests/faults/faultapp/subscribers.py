"""Subscribers that fail permanently, transiently, or while a flag in Redis says "broken".

Each records what happened to it in Redis (this run's key prefix), where the
test process reads it: attempt times (Redis server clock, so every process
agrees) and effects. Keys are built by :func:`attempts_key`, :func:`effects_key`
and :data:`BROKEN_FLAG`, which the tests import.
"""

from __future__ import annotations

from eventbus import Envelope, RetryPolicy, subscriber
from eventbus.errors import PermanentError
from eventbus.redis import client, key
from project import queues
from tests.faults.faultapp.events import PROBE

PERMANENT = "faults.always_permanent"
TRANSIENT = "faults.always_transient"
FRAGILE = "faults.fragile"

# Four retries whose ceilings (base * 2**n, capped) are 0.25, 0.5, 1.0, 1.0 s:
# they grow, then meet the cap. The cap stays below the workers' visibility timeout.
TRANSIENT_POLICY = RetryPolicy(transient=(ConnectionError,), max_retries=4, base_delay=0.25, max_delay=1.0)


def attempts_key(subscriber_name: str, event_id: object) -> str:
    return key("faults", "attempts", subscriber_name, str(event_id))


def effects_key(subscriber_name: str) -> str:
    return key("faults", "effects", subscriber_name)


def broken_flag() -> str:
    """While this key exists, FRAGILE fails permanently (a bug not yet fixed)."""
    return key("faults", "broken", FRAGILE)


def _record_attempt(subscriber_name: str, event: Envelope) -> None:
    seconds, micros = client().time()
    client().rpush(attempts_key(subscriber_name, event.id), f"{seconds}.{micros:06d}")


@subscriber(PROBE, name=PERMANENT, queue=queues.ANALYTICS, label="always permanent", critical=True)
def always_permanent(event: Envelope) -> None:
    """Fails for good on every attempt: dead-lettered at once, never retried."""
    _record_attempt(PERMANENT, event)
    raise PermanentError(f"probe {event.payload.label}: the provider said 550, no such mailbox")


@subscriber(PROBE, name=TRANSIENT, queue=queues.ANALYTICS, label="always transient", retry=TRANSIENT_POLICY)
def always_transient(event: Envelope) -> None:
    """Fails transiently on every attempt: retried per TRANSIENT_POLICY, then dead-lettered."""
    _record_attempt(TRANSIENT, event)
    raise ConnectionError(f"probe {event.payload.label}: connection reset by the provider")


@subscriber(PROBE, name=FRAGILE, queue=queues.ANALYTICS, label="fragile")
def fragile(event: Envelope) -> None:
    """Fails permanently while the broken flag is set; otherwise counts its effect once per event."""
    _record_attempt(FRAGILE, event)
    if client().exists(broken_flag()):
        raise PermanentError(f"probe {event.payload.label}: handler bug (flag {broken_flag()} is set)")
    client().hincrby(effects_key(FRAGILE), str(event.id), 1)
