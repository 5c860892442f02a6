"""The bus's settings: each with its default, the environment variable a host may read it from, and why.

A host sets any of them in its Django settings and leaves out the rest:
``install_defaults()`` (run as the bus's app loads, before any models module
or ``ready()``) puts the default of every missing one onto
``django.conf.settings``, as django-appconf does, so the bus reads
``settings.EVENTBUS_X`` everywhere. A host that configures itself from the
environment reads each ``Setting.env`` with its own parser (this project's
``project/settings.py``); the bus itself never reads the environment.

The CELERY_* settings the bus requires are in eventbus/celery_settings.py; the
start checks that relate these settings to each other and to Celery's are in
eventbus/operations/checks.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The bus's own queues. A host may rename them; EVENTBUS_QUEUES must list them.
DEAD_LETTER_QUEUE = "dead_letter"
HOUSEKEEPING_QUEUE = "eventbus"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    why: str
    env: str | None = None
    """The environment variable a host that reads its environment takes it from; None: not read from one."""
    minimum: float | None = None


def _read(name: str, default: Any, minimum: float | None, why: str, env: str | None = None) -> Setting:
    """A setting a host may read from the environment variable of the same name (or ``env``)."""
    return Setting(name, default, why, env or name, minimum)


SETTINGS: tuple[Setting, ...] = (
    # --- Where things are ---
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", "the Redis of the bus's own keys (counters, limiters, breakers)"),
    Setting("REDIS_KEY_PREFIX", "", "prepended to every Redis key, so deployments (or test runs) can share a database"),
    # Redis behind Sentinel (eventbus/sentinel.py): with REDIS_SENTINELS set, every Redis
    # client of the bus and the broker follow the primary the Sentinels name, and REDIS_URL
    # gives only the database index. Read from the environment by the host, like REDIS_URL.
    Setting("REDIS_SENTINELS", "", "host:port,host:port of the Sentinels; empty: REDIS_URL names the Redis"),
    Setting("REDIS_SENTINEL_MASTER", "", "the name the Sentinels monitor the primary under"),
    Setting("REDIS_PASSWORD", "", "the Redis nodes' password behind Sentinel (never in a URL)"),
    Setting("REDIS_SENTINEL_PASSWORD", "", "the Sentinels' own password, if they have one"),
    Setting(
        "EVENTBUS_QUEUES",
        (HOUSEKEEPING_QUEUE, DEAD_LETTER_QUEUE),
        "every worker queue, the bus's two included: a subscriber on another queue is refused at declaration",
    ),
    Setting("EVENTBUS_DEAD_LETTER_QUEUE", DEAD_LETTER_QUEUE, "failed and poison messages on their way to a row"),
    Setting("EVENTBUS_HOUSEKEEPING_QUEUE", HOUSEKEEPING_QUEUE, "the bus's own tasks: relay, reconciler, purges"),
    # --- The published contract (eventbus/contract/cloudevents.py) ---
    # CloudEvents' ``source`` of every event this service hands out: a URI-reference
    # naming it (an absolute URI is the spec's advice). Neither of the two has an
    # ``env``: a host derives both from its own address (project/settings.py: SITE_URL).
    Setting("EVENTBUS_SOURCE", "/eventbus", "the CloudEvents source naming this service"),
    # The absolute http(s) base under which the payloads' JSON Schemas are served
    # (``<base>/<type>/v<version>.json``, eventbus/urls.py), for CloudEvents'
    # ``dataschema``; empty: events name no schema.
    Setting("EVENTBUS_SCHEMA_URL", "", "the absolute base URL of the payload schemas, or empty"),
    # --- The broker ---
    # Redis redelivers an unacknowledged message after this many seconds. It must
    # exceed the longest task and every retry countdown, or a task runs twice
    # (kombu#337). The retry cap and the time limits are checked against it.
    _read(
        "EVENTBUS_VISIBILITY_TIMEOUT",
        3600,
        1,
        "Redis redelivers an unacknowledged message after it",
        env="CELERY_VISIBILITY_TIMEOUT",
    ),
    # RabbitMQ only: "quorum" declares every queue as a quorum queue (replicated, with a
    # delivery limit) and routes countdowns through the broker's delayed-delivery
    # exchanges instead of holding them in a worker (eventbus/celery_settings.py).
    # "classic" (the default) is what every other broker gets. A queue's type cannot be
    # changed in place: a worker refuses to start on a queue of the other type.
    _read("EVENTBUS_QUEUE_TYPE", "classic", None, "RabbitMQ queue type: classic or quorum"),
    # Publishing happens inside a request: a broker that does not answer must cost
    # a bounded, small time there. The outbox relay does the waiting instead.
    _read("EVENTBUS_PUBLISH_TIMEOUT", 1.0, 0.05, "a request's bound on the broker"),
    # After a request-path call to Redis or the broker failed (refused or timed out),
    # the process does not ask that service again for this many seconds: the requests
    # meanwhile pay nothing for it. Then one request asks again. 0 always asks.
    _read("EVENTBUS_FAILFAST_SECONDS", 5.0, 0.0, "a failed service is not asked again for this long"),
    # --- Writes gathered off the hot path ---
    # A worker process gathers its tasks' SUCCESS rows for this many seconds and a
    # thread writes them in one upsert (eventbus/fastpath/results.py), instead of a statement
    # and a commit per task; 0 writes each as its task ends. A process killed
    # meanwhile loses those rows, never a delivery: the ledger records each one.
    _read("EVENTBUS_RESULT_BATCH_SECONDS", 0.2, 0.0, "result rows gathered this long"),
    # A process gathers the dispatched marks of the events it sent for this many
    # seconds and writes them in one transaction, off the request
    # (eventbus/fastpath/marks.py); 0 marks each row in the request that sent it. A mark
    # lost with its process leaves the row to the relay, so the grace must be
    # several times longer.
    _read("EVENTBUS_MARK_BATCH_SECONDS", 0.2, 0.0, "dispatched marks gathered this long"),
    # --- The outbox relay ---
    # Every EVENTBUS_RELAY_INTERVAL seconds beat asks the relay to send what the
    # on-commit dispatch could not (broker down, process killed after commit).
    _read("EVENTBUS_RELAY_INTERVAL", 5.0, 0.1, "beat runs the relay this often"),
    # The relay leaves a row alone for this long after it was written, so that it
    # does not race the on-commit dispatch of the request that wrote it.
    _read("EVENTBUS_RELAY_GRACE", 10.0, 0.0, "a fresh row is left to its request"),
    # A relay that claimed a row and died releases it after this many seconds.
    _read("EVENTBUS_RELAY_LEASE", 60.0, 1.0, "a dead relay's claim expires"),
    _read("EVENTBUS_RELAY_BATCH", 500, 1, "rows per relay batch"),
    # --- The reconciler and the broker watch ---
    # The reconciler (eventbus/operations/reconcile.py) sends again a delivery the broker took
    # this many seconds ago that has no end in the ledger or the dead letters, nor
    # a retry or wait on its timeline since. It must exceed the longest task time
    # limit (eventbus/operations/checks.py): a delivery still running is not lost. A
    # delivery that was only slow arrives twice, and its ledger makes the second a counted no-op.
    _read("EVENTBUS_REDELIVER_AFTER", 900.0, 1.0, "a delivery this old with no end is sent again"),
    # Beat runs the reconciler this often; each run reads at most
    # EVENTBUS_RECONCILE_BATCH outbox rows per batch, and starts no batch after 20 s.
    _read("EVENTBUS_RECONCILE_INTERVAL", 60.0, 1.0, "beat runs the reconciler this often"),
    _read("EVENTBUS_RECONCILE_BATCH", 1000, 1, "outbox rows per reconciler batch"),
    # How often beat checks that the broker's Redis still holds its marker
    # (eventbus/operations/brokerwatch.py): a Redis that lost its data is found within this
    # many seconds, and what it lost is sent again at once.
    _read("EVENTBUS_BROKER_CHECK_INTERVAL", 5.0, 0.5, "a broker that lost its data is found this soon"),
    # --- Subscribers: retries, limits, ordering ---
    # Retry policy defaults for every subscriber (each may override them):
    # exponential backoff with full jitter, capped.
    _read("EVENTBUS_RETRY_MAX_RETRIES", 8, 0, "retries of a transient failure"),
    _read("EVENTBUS_RETRY_BASE_DELAY", 2.0, 0.0, "the first backoff"),
    _read("EVENTBUS_RETRY_MAX_DELAY", 600.0, 0.0, "the backoff's cap, below the visibility timeout"),
    # A delivery that started this many times without an orderly end (its worker
    # died each time) is dead-lettered instead of redelivered again.
    _read("EVENTBUS_MAX_DELIVERIES", 5, 1, "starts without an end before a dead letter"),
    # Default time limits of a subscriber's task. Past the soft one the handler
    # gets SoftTimeLimitExceeded (a transient failure); past the hard one its
    # process is killed. Both must stay below the visibility timeout.
    _read("EVENTBUS_SOFT_TIME_LIMIT", 60.0, 0.1, "a handler is told to stop"),
    _read("EVENTBUS_TIME_LIMIT", 90.0, 0.2, "a handler's process is killed"),
    # An ordered subscriber re-checks a deferred event this often, and gives up on
    # a gap (dead-letters the event) once it is this old.
    _read("EVENTBUS_ORDERING_RECHECK", 1.0, 0.05, "a deferred event is checked again"),
    _read("EVENTBUS_ORDERING_GAP_TIMEOUT", 300.0, 1.0, "a gap this old dead-letters"),
    # --- Backpressure ---
    # Above this many messages waiting in a queue, dispatch sheds events for
    # sheddable subscribers and holds those for critical ones in the outbox until
    # the queue drains. "queue=N" pairs; a queue not named gets the default.
    _read("EVENTBUS_HIGH_WATER_MARK", 10_000, 1, "a queue's depth that sheds or holds"),
    _read("EVENTBUS_HIGH_WATER_MARKS", "", None, "per-queue marks, queue=N pairs"),
    # Queue depths are read from the broker at most this often per process, so
    # that a busy web process does not ask the broker on every request.
    _read("EVENTBUS_QUEUE_DEPTH_CACHE", 1.0, 0.0, "a queue depth is read this often"),
    # --- Stalled consumers (eventbus/observability/stalls.py) ---
    # A worker is stalled when a queue it consumes has messages waiting and it
    # finished no task for this many seconds (alive, but no longer consuming:
    # celery#8030). A worker busy with long tasks finishes one at least every
    # hard time limit, so this must exceed the longest one by a heartbeat and
    # the progress note's write interval (5 + 1 s; eventbus/operations/checks.py);
    # 120 s leaves 24 s over that with the default EVENTBUS_TIME_LIMIT of 90.
    _read("EVENTBUS_STALL_AFTER", 120.0, 1.0, "a worker with work waiting that finished nothing this long is stalled"),
    # --- Dead letters ---
    # Dead letters whose last failure is older than this are deleted by beat:
    # long enough to notice a failure after a holiday and repair it.
    _read("EVENTBUS_DEADLETTER_RETENTION_DAYS", 30, 1, "dead letters kept"),
    # A message bigger than this is not handed to a task: the worker's consumer
    # takes it off the queue as a poison dead letter (eventbus/delivery/receive.py).
    # 4 MiB leaves room for a large batch (this project's telemetry: a 1 MiB request
    # body) and still stops a runaway producer from filling a worker's memory.
    _read("EVENTBUS_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, "a bigger message is poison"),
    # A dead letter keeps at most this much of a body; beyond it, a preview, the
    # whole length and a sha256 of the whole (eventbus/deadletters/failure.py):
    # enough to read and recognise any envelope, without storing (and rendering
    # on an ops page) a 20 MB body whole.
    _read("EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES", 64 * 1024, 1024, "a dead letter's body cap"),
    # --- Retention (eventbus/operations/retention_tables.py) ---
    # Dispatched, settled outbox rows (pending, deferred and unsettled ones stay).
    _read("EVENTBUS_OUTBOX_RETENTION_DAYS", 7, 1, "settled outbox rows kept"),
    # A ledger row goes only once its event's outbox row and dead letters are gone,
    # and not before this age, which the start check requires to exceed the longest
    # a late copy of a delivery can still arrive (~7 h by default). 30 days: who did
    # what and when stays as long as a dead letter does.
    _read("EVENTBUS_LEDGER_RETENTION_DAYS", 30, 1, "ledger rows kept"),
    # Timeline steps (retries, waits, dead letters, replays): as long as dead letters,
    # so the steps that explain a failure stay while it can be replayed.
    _read("EVENTBUS_TIMELINE_RETENTION_DAYS", 30, 1, "timeline steps kept"),
)


def derived(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the bus computes from others: the request path's bound.

    A request asks at most two side services, the Redis of the limits
    (REDIS_URL) and the broker, each at most once before
    eventbus/protection/failfast.py stops asking: each gets half of
    EVENTBUS_PUBLISH_TIMEOUT per socket operation (connect, and each reply), so
    that a hang of both costs a request about EVENTBUS_PUBLISH_TIMEOUT in all.
    These short timeouts apply only to the request path's own Redis client
    (eventbus/redis.py request_client) and producer pool
    (eventbus/fastpath/publishing_batch.py request_producer); workers, beat and
    the relay keep the longer ones of eventbus/celery_settings.py.
    """
    request_timeout = values["EVENTBUS_PUBLISH_TIMEOUT"] / 2
    return {
        "EVENTBUS_REQUEST_TIMEOUT": request_timeout,
        "EVENTBUS_REQUEST_TRANSPORT_OPTIONS": {
            # Redis (kombu's redis transport, redis-py).
            "socket_connect_timeout": request_timeout,
            "socket_timeout": request_timeout,
            # RabbitMQ (py-amqp): a passive declare's reply, a publish's write.
            "read_timeout": request_timeout,
            "write_timeout": request_timeout,
        },
    }


def with_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a settings module's namespace) with every bus setting it lacks, derived ones included."""
    complete = {setting.name: values.get(setting.name, setting.default) for setting in SETTINGS}
    return {**complete, **{name: value for name, value in derived(complete).items() if name not in values}}


def install_defaults() -> None:
    """Put every bus setting the host did not set onto ``django.conf.settings``."""
    from django.conf import settings

    present = {setting.name: getattr(settings, setting.name) for setting in SETTINGS if hasattr(settings, setting.name)}
    for name in ("EVENTBUS_REQUEST_TIMEOUT", "EVENTBUS_REQUEST_TRANSPORT_OPTIONS"):
        if hasattr(settings, name):
            present[name] = getattr(settings, name)
    for name, value in with_defaults(present).items():
        if name not in present:
            setattr(settings, name, value)
