"""Counters kept in Redis, shared by every process: duplicates skipped, and so on.

Counting is best effort: a counter that cannot be written is logged, never a
reason to fail the work it counts.
"""

from __future__ import annotations

import logging

import redis

from eventbus.redis import client, key

log = logging.getLogger(__name__)

DUPLICATES = "duplicates"


def incr(name: str, label: str, amount: int = 1) -> None:
    try:
        client().hincrby(key("counters", name), label, amount)
    except redis.RedisError as exc:
        log.warning("could not count %s for %s: %s", name, label, exc)


def read(name: str) -> dict[str, int]:
    raw = client().hgetall(key("counters", name))
    return {label: int(value) for label, value in raw.items()}
