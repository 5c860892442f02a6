"""The CELERY_* settings the bus requires, derived from its own (eventbus/conf.py).

A host adds them to its settings module, after its own CELERY_BROKER_URL and
any EVENTBUS_* it sets::

    globals().update(celery_settings(globals()))
    CELERY_BEAT_SCHEDULE = beat_schedule(globals())  # then the host's own entries

A worker refuses to start when one that keeps messages from being lost or duplicated was changed
(eventbus/operations/checks.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kombu import Exchange, Queue

from eventbus.conf import with_defaults
from eventbus.fastpath.sentinel import same_transport
from eventbus.sentinel import SentinelConfig, sentinel_config

BROKER_DEAD_LETTER_EXCHANGE = ""
"""Quorum profile: the exchange through which RabbitMQ hands on a message it gave up on (past
``x-delivery-limit``): the default exchange, with the dead-letter queue's name as routing key,
so that it lands in that queue with no binding to declare first. Nothing else publishes there
(every queue has an exchange of its own), so the worker on the dead-letter queue knows such a
message by it and turns it into a poison dead letter with its reason (eventbus/delivery/receive.py):
nothing the broker drops is lost silently."""

BROKER_DELIVERY_LIMIT = 20
"""Quorum profile: every queue's ``x-delivery-limit``, fixed (RabbitMQ 4's default).

Fixed rather than derived from EVENTBUS_MAX_DELIVERIES: a queue's arguments cannot change
(a declaration with another value is a PRECONDITION_FAILED), so a setting changed later, or
one process started with another value, would stop every worker until the queues were
deleted. The bus's own counter must dead-letter first, with its reason: RabbitMQ counts
every return of a message (a worker killed mid-task, but also a connection lost while the
message sat prefetched), the bus only starts without an end (eventbus/delivery/guards), so
the start check (eventbus/operations/checks.py) keeps EVENTBUS_MAX_DELIVERIES at least
DELIVERY_LIMIT_MARGIN below it."""

DELIVERY_LIMIT_MARGIN = 5
"""Returns RabbitMQ may count beyond the bus's own limit (connection losses while a message was in flight)."""


def celery_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The bus's CELERY_* settings for a host whose settings (so far) are ``values``."""
    bus = with_defaults(values)
    # Raises ValueError for Sentinel settings that contradict each other (eventbus/sentinel.py).
    sentinel = sentinel_config({**bus, "CELERY_BROKER_URL": values.get("CELERY_BROKER_URL")})
    broker_url: str = values.get("CELERY_BROKER_URL") or (sentinel.broker_url() if sentinel else bus["REDIS_URL"])
    housekeeping = bus["EVENTBUS_HOUSEKEEPING_QUEUE"]
    quorum = bus["EVENTBUS_QUEUE_TYPE"] == "quorum"
    broker = _broker(broker_url, bus, sentinel)
    if quorum:
        broker = _quorum(broker)
    return {
        **_results(),
        **_delivery(),
        **broker,
        # Queues are declared by EVENTBUS_QUEUES; a message for an undeclared queue
        # is a bug, so Celery must not invent queues on the fly.
        "CELERY_TASK_QUEUES": quorum_queues(bus)
        if quorum
        else [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in bus["EVENTBUS_QUEUES"]],
        "CELERY_TASK_DEFAULT_QUEUE": housekeeping,
        # Each subscriber's task goes to the queue its @subscriber declaration names.
        "CELERY_TASK_ROUTES": ("eventbus.contract.routing.route_task",),
        "CELERY_TASK_CREATE_MISSING_QUEUES": False,
        # Celery's stock consumer logs and discards a message it cannot hand to a task
        # (not JSON, pickled, an unknown task name); this one first turns it into a
        # "poison" dead letter. The setting is Celery's worker_consumer (celery/app/defaults.py).
        # https://docs.celeryq.dev/en/stable/reference/celery.worker.consumer.html
        "CELERY_WORKER_CONSUMER": "eventbus.delivery.receive:DeadLetteringConsumer",
    }


def _results() -> dict[str, Any]:
    return {
        # Results go to the database (django-celery-results) so that they survive
        # restarts and show in Django admin with their task name, queue and arguments.
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-extended
        # django-celery-results' own backend ("django-db"), writing each state in one
        # upsert instead of a read and a write (eventbus/fastpath/results.py).
        "CELERY_RESULT_BACKEND": "eventbus.fastpath.results:UpsertDatabaseBackend",
        "CELERY_RESULT_EXTENDED": True,
        # No "started" result row (Celery's default): it would be a database write
        # before every task body, in the path of every delivery (figures 1 and 5 of
        # docs/benchmarks.md). Which worker runs a task is in Flower and the worker's
        # log; which one did it is in the ledger and in the SUCCESS row.
        "CELERY_TASK_TRACK_STARTED": False,
    }


def _delivery() -> dict[str, Any]:
    return {
        # JSON only, in and out: a pickled message could run code in the worker.
        "CELERY_ACCEPT_CONTENT": ["json"],
        "CELERY_RESULT_ACCEPT_CONTENT": ["json"],
        "CELERY_TASK_SERIALIZER": "json",
        "CELERY_RESULT_SERIALIZER": "json",
        "CELERY_EVENT_SERIALIZER": "json",
        # At-least-once: a message is acknowledged after its task finished, and a task
        # whose worker process died is put back instead of being acknowledged.
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
        "CELERY_TASK_ACKS_LATE": True,
        "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
        # A task killed by its hard time limit is put back too. Celery's default acknowledges
        # it (task_acks_on_timeout, new in 5.7, defaults to task_acks_on_failure_or_timeout,
        # True): the message was gone with no ledger entry and no dead letter. A pool process
        # killed mid-task whose death the worker noticed only after the limit ran out took
        # that path as well. EVENTBUS_MAX_DELIVERIES still dead-letters one that never fits.
        "CELERY_TASK_ACKS_ON_TIMEOUT": False,
    }


def _broker(broker_url: str, bus: Mapping[str, Any], sentinel: SentinelConfig | None = None) -> dict[str, Any]:
    visibility = bus["EVENTBUS_VISIBILITY_TIMEOUT"]
    publish_timeout = bus["EVENTBUS_PUBLISH_TIMEOUT"]
    options: dict[str, Any] = {
        "visibility_timeout": visibility,
        "socket_connect_timeout": publish_timeout,
        # Workers' and the relay's commands (a batch of 200 events, a Lua fetch of
        # many) may take longer than a request's share; a BRPOP is not bound by it
        # (kombu reads its reply once the socket is readable, brpop_timeout 1 s).
        "socket_timeout": max(publish_timeout, 5.0),
        "retry_on_timeout": False,
        # Opening a channel for publishing tries once: no sleep-and-retry on the
        # request path. Workers pass their own broker_connection_max_retries.
        "max_retries": 0,
        # How soon a running worker finds messages a dead worker held. kombu's
        # default scans every 10th sweep of 10 s: ~100 s after the visibility
        # timeout, measured. Sweep every visibility/10 seconds (1 to 10 s), scan
        # each time (one cheap ZRANGEBYSCORE), and let a dead sweeper's lock go
        # with the visibility timeout rather than after 5 minutes.
        "unacked_restore_interval": max(1, min(10, visibility // 10)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(10, min(300, visibility)),
    }
    if bus["REDIS_KEY_PREFIX"] and broker_url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        options["global_keyprefix"] = bus["REDIS_KEY_PREFIX"]
    found: dict[str, Any] = {
        "CELERY_BROKER_TRANSPORT_OPTIONS": options,
        "CELERY_BROKER_CONNECTION_TIMEOUT": publish_timeout,
        "CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP": True,
    }
    if broker_url.startswith("redis://"):
        # redis-py would retry a refused connection for ~4 s; see eventbus/fastpath/broker.py.
        found["CELERY_BROKER_TRANSPORT"] = "eventbus.fastpath.broker:FailFastRedisTransport"
    if sentinel is not None and broker_url.startswith("sentinel://"):
        # The same transport on kombu's Sentinel channel (eventbus/fastpath/sentinel.py): the
        # Sentinels name the primary; the passwords travel as options, never in the URL.
        found["CELERY_BROKER_URL"] = broker_url
        found["CELERY_BROKER_TRANSPORT"] = "eventbus.fastpath.sentinel:FailFastSentinelTransport"
        found["CELERY_BROKER_FAILOVER_STRATEGY"] = same_transport
        options["master_name"] = sentinel.master
        if sentinel.password:
            options["redis_password"] = sentinel.password
        if sentinel.sentinel_password:
            options["sentinel_password"] = sentinel.sentinel_password
    return found


def quorum_arguments(bus: Mapping[str, Any]) -> dict[str, Any]:
    """The ``x-`` arguments of every queue in the quorum profile."""
    return {
        "x-queue-type": "quorum",
        # Above the bus's own counter, so that it dead-letters first (BROKER_DELIVERY_LIMIT).
        "x-delivery-limit": BROKER_DELIVERY_LIMIT,
        # What the broker still drops past its limit becomes a dead letter row, not a silent loss.
        "x-dead-letter-exchange": BROKER_DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": bus["EVENTBUS_DEAD_LETTER_QUEUE"],
        # at-least-once: the message leaves the queue only once the dead-letter queue confirmed it
        # (the default, at-most-once, may drop it on a leader change). RabbitMQ honours it only
        # with x-overflow reject-publish; no queue has a length limit, so nothing is ever refused.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def broker_countdown(countdown: float, queue_type: str) -> float:
    """``countdown`` as the broker can hold it: whole seconds, rounded up, with quorum queues.

    Native delayed delivery counts in whole seconds (a routing key of 28 bits), and Celery
    refuses a countdown that truncates to 0 ("countdown must be a positive number",
    kombu.transport.native_delayed_delivery.calculate_routing_key): a 0.2 s backoff would
    fail to be scheduled. Rounding up keeps "no sooner than" true.
    """
    return float(math.ceil(countdown)) if queue_type == "quorum" and countdown > 0 else countdown


def quorum_queues(bus: Mapping[str, Any]) -> list[Queue]:
    """EVENTBUS_QUEUES as quorum queues, each behind a topic exchange of its name.

    Topic, not direct: Celery's native delayed delivery (kombu.transport.native_delayed_delivery)
    publishes a countdown to the ``celery_delayed_*`` chain of TTL queues with the delay in
    bits before the routing key; what falls out at the end reaches ``celery_delayed_delivery``,
    which the worker's DelayedDelivery bootstep binds to each queue's exchange with
    ``#.<queue>``. A direct exchange cannot match that key, and Celery then falls back to
    holding the countdown in the worker (celery/app/base.py send_task).
    """
    arguments = quorum_arguments(bus)
    return [
        Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
        for name in bus["EVENTBUS_QUEUES"]
    ]


def _quorum(broker: dict[str, Any]) -> dict[str, Any]:
    """``broker`` (the broker settings) with the quorum profile's (RabbitMQ); its queues: ``quorum_queues``."""
    return {
        **broker,
        # Queues Celery declares on its own (none: CELERY_TASK_CREATE_MISSING_QUEUES is off) would be quorum too.
        "CELERY_TASK_DEFAULT_QUEUE_TYPE": "quorum",
        # Quorum queues refuse a global prefetch (basic.qos global): Celery sees them and sets the
        # prefetch per consumer, concurrency x CELERY_WORKER_PREFETCH_MULTIPLIER (1 here), fixed.
        # It also adds the DelayedDelivery bootstep, which declares the celery_delayed_* exchanges
        # and queues and binds the worker's queues to them at each start.
        "CELERY_WORKER_DETECT_QUORUM_QUEUES": True,
        # The celery_delayed_* queues hold countdowns for up to 2^28 s: replicated like the rest.
        "CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE": "quorum",
        # Publisher confirms (py-amqp): each publish waits for the broker's ack, and a nack or
        # a closed channel raises, so the outbox marks nothing dispatched that the broker did
        # not take. Merged into every connection's options, the request path's too
        # (eventbus/fastpath/publishing_batch.py request_producer), whose read_timeout bounds the wait.
        "CELERY_BROKER_TRANSPORT_OPTIONS": {**broker["CELERY_BROKER_TRANSPORT_OPTIONS"], "confirm_publish": True},
    }


def beat_schedule(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The bus's periodic tasks (CELERY_BEAT_SCHEDULE), each on the housekeeping queue and expiring when
    its next run is due; a host adds its own entries to this dict."""
    bus = with_defaults(values)
    queue = bus["EVENTBUS_HOUSEKEEPING_QUEUE"]
    every = {
        "eventbus.relay_outbox": (bus["EVENTBUS_RELAY_INTERVAL"], bus["EVENTBUS_RELAY_INTERVAL"] * 2),
        "eventbus.reconcile_deliveries": (bus["EVENTBUS_RECONCILE_INTERVAL"], bus["EVENTBUS_RECONCILE_INTERVAL"] * 2),
        "eventbus.watch_broker": (bus["EVENTBUS_BROKER_CHECK_INTERVAL"], bus["EVENTBUS_BROKER_CHECK_INTERVAL"] * 2),
        # Hourly: retention counts in days, so an hour late is nothing, and each run has little to delete.
        "eventbus.purge_dead_letters": (3600.0, 3600.0),
        # Every ten minutes, in bounded chunks (eventbus/operations/retention.py).
        "eventbus.purge_expired": (600.0, 600.0),
        # Result rows expire by Celery's own CELERY_RESULT_EXPIRES through its built-in
        # celery.backend_cleanup, which beat adds by itself, daily at 4 am, for a backend
        # without native expiry (django-celery-results'). Named here under its own name,
        # beat runs it every ten minutes instead: eventbus/fastpath/results.py bounds each run, so
        # one run a day could not keep up with a day of results.
        "celery.backend_cleanup": (600.0, 600.0),
    }
    return {
        task: {"task": task, "schedule": schedule, "options": {"queue": queue, "expires": expires}}
        for task, (schedule, expires) in every.items()
    }
