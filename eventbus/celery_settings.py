"""The CELERY_* settings the bus requires, derived from its own (eventbus/conf.py).

A host adds them to its settings module, after its own CELERY_BROKER_URL and
any EVENTBUS_* it sets::

    globals().update(celery_settings(globals()))
    CELERY_BEAT_SCHEDULE = beat_schedule(globals())  # then the host's own entries

A worker refuses to start when one that keeps messages from being lost or duplicated was changed
(eventbus/operations/checks.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kombu import Exchange, Queue

from eventbus.conf import with_defaults
from eventbus.fastpath.sentinel import same_transport
from eventbus.sentinel import SentinelConfig, sentinel_config


def celery_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The bus's CELERY_* settings for a host whose settings (so far) are ``values``."""
    bus = with_defaults(values)
    # Raises ValueError for Sentinel settings that contradict each other (eventbus/sentinel.py).
    sentinel = sentinel_config({**bus, "CELERY_BROKER_URL": values.get("CELERY_BROKER_URL")})
    broker_url: str = values.get("CELERY_BROKER_URL") or (sentinel.broker_url() if sentinel else bus["REDIS_URL"])
    housekeeping = bus["EVENTBUS_HOUSEKEEPING_QUEUE"]
    return {
        **_results(),
        **_delivery(),
        **_broker(broker_url, bus, sentinel),
        # Queues are declared by EVENTBUS_QUEUES; a message for an undeclared queue
        # is a bug, so Celery must not invent queues on the fly.
        "CELERY_TASK_QUEUES": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in bus["EVENTBUS_QUEUES"]
        ],
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
