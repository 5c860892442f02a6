"""Figure 7's Dramatiq side: one no-op actor per queue, each one Redis INCR, like ``bench.bare_app``'s ``noop``.

Dramatiq's Redis broker on the benchmark's redis-server, under a namespace of
its own (``<REDIS_KEY_PREFIX>dramatiq``), so no key collides with Celery's.
No result backend; Dramatiq's default middleware (age and time limits,
retries, callbacks, pipelines, shutdown notifications). Run its worker with::

    dramatiq bench.dramatiq_app --processes 2 --threads 1 --queues dramatiq_a dramatiq_b
"""

from __future__ import annotations

import os
from functools import lru_cache

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("REDIS_KEY_PREFIX", "") + "dramatiq"
DONE_KEY = NAMESPACE + ":noop:done"
QUEUES = ("dramatiq_a", "dramatiq_b")

broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    # Created on first use, so each worker process (forked) opens its own connection.
    return redis.Redis.from_url(BROKER_URL)


def _noop() -> None:
    _client().incr(DONE_KEY)


# The same function on each queue: Dramatiq routes a message to its actor's one queue.
noop_a = dramatiq.actor(_noop, actor_name="noop_a", queue_name=QUEUES[0], max_retries=0)
noop_b = dramatiq.actor(_noop, actor_name="noop_b", queue_name=QUEUES[1], max_retries=0)
ACTORS = (noop_a, noop_b)


def send(count: int) -> None:
    """``count`` messages, alternating the two queues, as ``bench.throughput.send_noops`` does."""
    for i in range(count):
        ACTORS[i % 2].send()


def done() -> int:
    return int(_client().get(DONE_KEY) or 0)
