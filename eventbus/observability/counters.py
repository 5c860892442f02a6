"""Counters kept in Redis, shared by every process: duplicates skipped, events shed, and so on.

Counting is best effort: a counter that cannot be written is logged, never a
reason to fail the work it counts.
"""

from __future__ import annotations

import logging

import redis

from eventbus.protection import failfast
from eventbus.redis import client, key, request_client

log = logging.getLogger(__name__)

DELIVERED = "delivered"
"""Effects that happened (one per event and subscriber)."""
DUPLICATES = "duplicates"
"""Deliveries the ledger skipped: the effect had already happened."""
STALE = "stale"
"""Events an ordered subscriber ignored: a later event of the aggregate was applied."""
ORDER_WAITS = "order_waits"
"""Times an ordered subscriber deferred an event whose predecessor it had not handled."""
EFFECT_WAITS = "effect_waits"
"""Deliveries rescheduled because another delivery of the same event was sending its effect."""
BREAKER_WAITS = "breaker_waits"
"""Tasks rescheduled because a circuit breaker was open."""
RATE_LIMIT_WAITS = "rate_limit_waits"
"""Tasks rescheduled to wait for a rate-limit token."""
RETRIES = "retries"
"""Transient failures retried."""
DEAD_LETTERED = "dead_lettered"
"""Messages sent to the dead-letter queue."""
SHED = "shed"
"""Events dropped for a sheddable subscriber whose queue was above its high-water mark."""
BATCHES = "batches"
"""Bulk transactions a batching subscriber committed."""
BATCHED = "batched"
"""Events a batching subscriber handled in bulk (the rest went one by one)."""
DEFERRED = "deferred"
"""Events held in the outbox for a critical subscriber whose queue was above its high-water mark."""
REDELIVERED = "redelivered"
"""Deliveries the reconciler sent again: the broker took them and the ledger never saw them end."""


def incr(name: str, label: str, amount: int = 1, *, request_path: bool = False) -> None:
    """Add ``amount``. ``request_path``: counted from a request, with the request path's short timeout and
    through its fail-fast gate (eventbus/protection/failfast.py), so that a hung Redis costs the request little."""
    try:
        if request_path:
            with failfast.REDIS.attempt():
                request_client().hincrby(key("counters", name), label, amount)
        else:
            client().hincrby(key("counters", name), label, amount)
    except (redis.RedisError, failfast.Unavailable) as exc:
        log.warning("could not count %s for %s: %s", name, label, exc)


def incr_into(pipe: redis.client.Pipeline, name: str, label: str, amount: int = 1) -> None:
    """``incr``'s command, queued on ``pipe`` for a caller that sends other bookkeeping in the same round trip."""
    pipe.hincrby(key("counters", name), label, amount)


def read(name: str) -> dict[str, int]:
    raw = client().hgetall(key("counters", name))
    return {label: int(value) for label, value in raw.items()}
