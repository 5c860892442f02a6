"""Backpressure: how full a queue is, read from the broker, against its high-water mark.

Depth is read at most every EVENTBUS_QUEUE_DEPTH_CACHE seconds per process and
queue, so a busy web process asks the broker about once a second, not on every
request. The mark is a soft limit: between two reads a queue may overshoot it
by what arrives in that time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_cache: dict[str, tuple[float, int]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Pressure:
    queue: str
    depth: int
    high_water_mark: int

    @property
    def above(self) -> bool:
        return self.depth >= self.high_water_mark

    def describe(self) -> str:
        return f"queue {self.queue} holds {self.depth} messages (high-water mark {self.high_water_mark})"


@lru_cache(maxsize=8)
def _marks(spec: str) -> dict[str, int]:
    marks: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        queue, _, value = pair.partition("=")
        try:
            marks[queue.strip()] = int(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"EVENTBUS_HIGH_WATER_MARKS has {pair!r}; "
                "write queue=count pairs, e.g. analytics=5000,notifications=20000"
            ) from None
    return marks


def high_water_mark(queue: str) -> int:
    return _marks(settings.EVENTBUS_HIGH_WATER_MARKS).get(queue, settings.EVENTBUS_HIGH_WATER_MARK)


def read_depth(channel: Any, queue: str) -> int:
    """Messages waiting in ``queue``: a list length on Redis, a passive declare on AMQP."""
    size = getattr(channel, "_size", None)
    if size is not None:
        # kombu's virtual transports (Redis): LLEN over the priority lists,
        # with the global key prefix applied.
        return int(size(queue))
    # AMQP: a passive declare on a channel of its own, because a queue that
    # does not exist yet closes the channel that asked (404), and that must
    # not be the producer's.
    probe = channel.connection.channel()
    try:
        return int(probe.queue_declare(queue=queue, passive=True).message_count)
    except Exception as exc:
        if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
            return 0  # not declared yet: nothing waits in it
        raise
    finally:
        with contextlib.suppress(Exception):
            probe.close()


def pressure(channel: Any, queue: str) -> Pressure:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(queue)
    if cached is not None and now - cached[0] < settings.EVENTBUS_QUEUE_DEPTH_CACHE:
        depth = cached[1]
    else:
        depth = read_depth(channel, queue)
        with _lock:
            _cache[queue] = (now, depth)
    return Pressure(queue, depth, high_water_mark(queue))


def forget_depths() -> None:
    """Drop cached depths (tests, and the relay, which wants fresh numbers)."""
    with _lock:
        _cache.clear()
