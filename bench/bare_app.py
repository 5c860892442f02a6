"""The throughput baseline: bare Celery, one no-op task, the pipeline's delivery settings.

Same broker (the benchmark's redis-server), JSON only, ``acks_late`` with
``reject_on_worker_lost``, prefetch multiplier 1, the same visibility timeout;
no result backend, no task events, no database. Two queues, like the
pipeline's two subscriber queues, so the worker's consumer does the same
round-robin over two lists. The task counts itself with one Redis INCR.

Run its worker like the pipeline's::

    celery -A bench.bare_app worker -Q bare_a,bare_b -c 2 -P prefork
"""

from __future__ import annotations

import os
from functools import lru_cache

import redis
from celery import Celery
from kombu import Exchange, Queue

QUEUES = ("bare_a", "bare_b")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# Its own prefix on the benchmark's redis-server, beside the pipeline's keys.
PREFIX = os.environ.get("REDIS_KEY_PREFIX", "") + "bare:"
DONE_KEY = PREFIX + "noop:done"

# Not the current app: the benchmark process also holds the project's app,
# whose shared tasks resolve through the current app.
app = Celery("bare", set_as_current=False)
app.conf.update(
    broker_url=BROKER_URL,
    broker_transport_options={"visibility_timeout": 3600, "global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    accept_content=["json"],
    task_serializer="json",
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_queue=QUEUES[0],
    task_create_missing_queues=False,
    worker_hijack_root_logger=False,
)


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    # Created on first use, so each pool process (forked) opens its own connection.
    return redis.Redis.from_url(BROKER_URL)


@app.task(name="bench.noop")
def noop() -> None:
    _client().incr(DONE_KEY)


def done() -> int:
    return int(_client().get(DONE_KEY) or 0)
