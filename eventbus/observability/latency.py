"""Delivery latency (the event's occurred_at to the subscriber's effect), as a histogram in Redis.

Every worker adds to the same buckets, so ``/metrics`` shows the cluster's
distribution. Best effort, like the counters.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import redis

from eventbus.observability.counters import DELIVERED
from eventbus.redis import client, key

# Seconds; chosen to separate "instant" (tens of ms), "a retry or two"
# (seconds) and "waited out an outage" (minutes).
BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


@dataclass(frozen=True)
class Histogram:
    subscriber: str
    cumulative: list[tuple[float, int]]
    """(upper bound, count of observations at or below it), ending with +Inf."""
    total: float
    count: int


def _bucket_label(seconds: float) -> str:
    index = bisect.bisect_left(BUCKETS, seconds)
    return "+Inf" if index == len(BUCKETS) else repr(BUCKETS[index])


def observe_into(pipe: redis.client.Pipeline, subscriber: str, latencies_seconds: list[float]) -> None:
    """Count deliveries and their latencies, queued on ``pipe`` (eventbus/delivery/pipeline.py's round trip
    after the effect): the delivered counter, one bucket increment per bucket met, the sum."""
    if not latencies_seconds:
        return
    buckets: dict[str, int] = {}
    for seconds in latencies_seconds:
        label = _bucket_label(max(0.0, seconds))
        buckets[label] = buckets.get(label, 0) + 1
    pipe.hincrby(key("counters", DELIVERED), subscriber, len(latencies_seconds))
    for label, count in buckets.items():
        pipe.hincrby(key("latency", subscriber), label, count)
    pipe.hincrbyfloat(key("latency-sum"), subscriber, sum(max(0.0, s) for s in latencies_seconds))


def histogram(subscriber: str) -> Histogram:
    raw = client().hgetall(key("latency", subscriber))
    total = float(client().hget(key("latency-sum"), subscriber) or 0.0)
    running = 0
    cumulative: list[tuple[float, int]] = []
    for bound in (*BUCKETS, math.inf):
        running += int(raw.get("+Inf" if bound == math.inf else repr(bound), 0))
        cumulative.append((bound, running))
    return Histogram(subscriber, cumulative, total, running)
