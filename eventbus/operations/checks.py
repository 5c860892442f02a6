"""Every start check of the bus: settings that would lose or duplicate messages stop the process, saying what to change.

Four moments, one module:

- as the bus's app loads, in every process (``refuse_improper``): the bus's
  settings against each other and the broker URL, and the names its published
  events carry (``contract_problems``); an ImproperlyConfigured stops the
  process as a bad settings module would;
- in the host's settings module, for the host's own countdowns
  (``countdown_problem``);
- at each ``@subscriber`` declaration (``check_declaration``): its time
  limits and retry cap against the visibility timeout;
- when a worker starts (``worker_init``, eventbus/signals.py) and in
  ``manage.py check`` (``problems``), on the Celery configuration in force:

  - a task acknowledged late must be rejected (put back) when its worker dies
    or its hard time limit kills it, or that message is lost;
  - every time limit and retry countdown must stay below the Redis visibility
    timeout, or Redis delivers the task a second time while the first still
    runs or waits (kombu#337);
  - no serializer but JSON may be accepted: a pickled message runs code;
  - the reconciler's ``EVENTBUS_REDELIVER_AFTER`` must exceed every task time
    limit, or it sends again deliveries that are still running;
  - a worker is called stalled only after ``EVENTBUS_STALL_AFTER`` without a
    finished task, which must exceed every hard time limit, or a worker busy
    with its longest task is reported stalled;
  - the ledger must be kept longer than a late copy of a delivery can still
    arrive, or that copy takes effect twice (eventbus/operations/retention_tables.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from eventbus.celery_settings import BROKER_DELIVERY_LIMIT, DELIVERY_LIMIT_MARGIN
from eventbus.contract import registry
from eventbus.contract.errors import EventDeclarationError
from eventbus.contract.retry import RetryPolicy
from eventbus.sentinel import sentinel_config


def improper(values: Any) -> list[str]:
    """What is wrong with the bus's settings taken together (``values``: django.conf.settings)."""
    found: list[str] = []
    broker_url = str(getattr(values, "CELERY_BROKER_URL", None) or values.REDIS_URL)
    if broker_url.startswith("rediss://") and "ssl_cert_reqs=" not in broker_url:
        # kombu, given rediss:// with no ssl options, accepts any certificate.
        found.append(
            "CELERY_BROKER_URL (or REDIS_URL) uses rediss:// without ssl_cert_reqs: the broker would accept any "
            "certificate. Add ?ssl_cert_reqs=required (and ssl_ca_certs=/path/to/ca.pem for a private CA)."
        )
    queue_type = queue_type_problem(values.EVENTBUS_QUEUE_TYPE, broker_url)
    if queue_type:
        found.append(queue_type)
    deliveries = values.EVENTBUS_MAX_DELIVERIES
    if values.EVENTBUS_QUEUE_TYPE == "quorum" and deliveries > BROKER_DELIVERY_LIMIT - DELIVERY_LIMIT_MARGIN:
        found.append(
            f"EVENTBUS_MAX_DELIVERIES ({deliveries}) must be at most {BROKER_DELIVERY_LIMIT - DELIVERY_LIMIT_MARGIN} "
            f"with EVENTBUS_QUEUE_TYPE=quorum: RabbitMQ gives up on a message after {BROKER_DELIVERY_LIMIT} "
            "deliveries (every queue's x-delivery-limit, fixed), and the bus must dead-letter it first, with its "
            "reason. Lower EVENTBUS_MAX_DELIVERIES."
        )
    grace, marks = values.EVENTBUS_RELAY_GRACE, values.EVENTBUS_MARK_BATCH_SECONDS
    if marks > 0 and grace < 5 * marks:
        found.append(
            f"EVENTBUS_RELAY_GRACE ({grace:g}s) must be at least 5 times EVENTBUS_MARK_BATCH_SECONDS ({marks:g}s): "
            "the relay would send events again whose dispatched mark is still being gathered. Raise the grace, or "
            "set EVENTBUS_MARK_BATCH_SECONDS=0 to mark each row in its request."
        )
    cap, visibility = values.EVENTBUS_RETRY_MAX_DELAY, values.EVENTBUS_VISIBILITY_TIMEOUT
    if cap >= visibility:
        found.append(
            f"EVENTBUS_RETRY_MAX_DELAY ({cap:g}s) must be below CELERY_VISIBILITY_TIMEOUT ({visibility}s): a "
            "countdown longer than the visibility timeout makes Redis deliver the task twice. Lower the cap or "
            "raise the timeout."
        )
    redeliver, limit = values.EVENTBUS_REDELIVER_AFTER, values.EVENTBUS_TIME_LIMIT
    if redeliver <= limit:
        found.append(
            f"EVENTBUS_REDELIVER_AFTER ({redeliver:g}s) must exceed EVENTBUS_TIME_LIMIT ({limit:g}s): the reconciler "
            "would send again deliveries that are still running. Raise EVENTBUS_REDELIVER_AFTER or lower the time "
            "limit."
        )
    found += stall_problems(values.EVENTBUS_STALL_AFTER, (("EVENTBUS_TIME_LIMIT", values.EVENTBUS_TIME_LIMIT),))
    queues = tuple(values.EVENTBUS_QUEUES)
    for setting in ("EVENTBUS_DEAD_LETTER_QUEUE", "EVENTBUS_HOUSEKEEPING_QUEUE"):
        if getattr(values, setting) not in queues:
            found.append(
                f"{setting} ({getattr(values, setting)!r}) is not in EVENTBUS_QUEUES {queues}: the bus's own "
                "tasks would go to a queue no worker declares. Add it to EVENTBUS_QUEUES."
            )
    found += contract_problems(values.EVENTBUS_SOURCE, values.EVENTBUS_SCHEMA_URL)
    return found


# RFC 3986's characters: unreserved, reserved and percent-encoded octets; nothing else
# (no space, no quote, no non-ASCII) may stand in a URI-reference.
_URI_CHARACTERS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def contract_problems(source: str, schema_url: str) -> list[str]:
    """What is wrong with the names the published events carry (eventbus/contract/cloudevents.py).

    A bad ``source`` or ``dataschema`` would not fail here but in another
    team's consumer, whose CloudEvents SDK refuses the event.
    """
    found: list[str] = []
    if not _is_uri_reference(source):
        found.append(
            f"EVENTBUS_SOURCE ({source!r}) is not a URI-reference (RFC 3986): it is every CloudEvent's source. "
            "Set it to this service's absolute URL, e.g. https://example.com, or a path such as /eventbus."
        )
    parts = urlsplit(schema_url) if _is_uri_reference(schema_url) else None
    if schema_url and (parts is None or parts.scheme not in ("http", "https") or not parts.netloc):
        found.append(
            f"EVENTBUS_SCHEMA_URL ({schema_url!r}) is not an absolute http(s) URL: CloudEvents' dataschema must "
            "be one. Set it to where the schemas are served, e.g. https://example.com/events/schemas, or leave "
            "it empty."
        )
    return found


def _is_uri_reference(text: object) -> bool:
    """Whether ``text`` is a non-empty RFC 3986 URI-reference: a URI, or a relative reference."""
    if not isinstance(text, str) or not _URI_CHARACTERS.fullmatch(text):
        return False
    try:
        urlsplit(text)  # brackets that do not make an IPv6 host
    except ValueError:
        return False
    first = re.split(r"[/?#]", text, maxsplit=1)[0]
    # A colon before the first "/", "?" or "#" ends a scheme: a relative reference cannot have one there.
    return ":" not in first or bool(_SCHEME.fullmatch(first.split(":", 1)[0]))


def sentinel_problem(values: dict[str, Any]) -> str | None:
    """What is wrong with the Redis Sentinel settings in ``values`` (a host's settings module), or None.

    For the host's settings module, like ``countdown_problem``: REDIS_SENTINELS
    without a master name, a malformed host:port, a REDIS_URL or
    CELERY_BROKER_URL that contradicts it (eventbus/sentinel.py says why).
    """
    try:
        sentinel_config(values)
    except ValueError as exc:
        return f"{exc}."
    return None


def countdown_problem(setting: str, wait: float, visibility: float) -> str | None:
    """A host's own countdown (a limiter's or a breaker's wait, set by ``setting``) against the visibility timeout.

    For a host's settings module, which has no bus loaded yet to ask: it passes
    its EVENTBUS_VISIBILITY_TIMEOUT, and raises ImproperlyConfigured on a problem.
    """
    if wait < visibility:
        return None
    return (
        f"{setting} makes tasks wait {wait:g}s, not below CELERY_VISIBILITY_TIMEOUT ({visibility}s): a countdown "
        "that long makes Redis deliver the task twice. Allow a faster rate or a shorter reset timeout, or raise "
        "the visibility timeout."
    )


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def queue_type_problem(queue_type: object, broker_url: str) -> str | None:
    """EVENTBUS_QUEUE_TYPE against the broker: quorum queues exist only on RabbitMQ (AMQP)."""
    if queue_type not in ("classic", "quorum"):
        return f"EVENTBUS_QUEUE_TYPE ({queue_type!r}) must be 'classic' (the default) or 'quorum' (RabbitMQ only)."
    if queue_type == "quorum" and not broker_url.startswith(AMQP_SCHEMES):
        scheme = broker_url.split("://", 1)[0] if "://" in broker_url else "?"
        return (
            f"EVENTBUS_QUEUE_TYPE=quorum needs a RabbitMQ broker, but CELERY_BROKER_URL (or REDIS_URL) is a "
            f"{scheme}:// URL: quorum queues exist only on RabbitMQ. Set "
            "CELERY_BROKER_URL=amqp://user@host:5672/vhost, or EVENTBUS_QUEUE_TYPE=classic."
        )
    return None


def refuse_improper() -> None:
    """Stop the process on the first thing wrong with the bus's settings (run as its app loads)."""
    found = improper(settings)
    if found:
        raise ImproperlyConfigured(found[0])


def check_declaration(name: str, policy: RetryPolicy, soft_limit: float, hard_limit: float) -> None:
    """Refuse a subscriber declaration that would make Redis deliver a task twice (kombu#337)."""
    visibility = settings.EVENTBUS_VISIBILITY_TIMEOUT
    if not 0 < soft_limit < hard_limit:
        raise EventDeclarationError(
            f"subscriber {name!r}: soft_time_limit ({soft_limit:g}s) must be positive and below "
            f"time_limit ({hard_limit:g}s), so the handler is told before it is killed"
        )
    for what, seconds in (("time_limit", hard_limit), ("the retry cap", policy.max_delay)):
        if seconds >= visibility:
            raise EventDeclarationError(
                f"subscriber {name!r}: {what} ({seconds:g}s) is not below CELERY_VISIBILITY_TIMEOUT "
                f"({visibility}s): Redis would deliver the task a second time while the first still runs "
                "or waits. Lower it, or raise CELERY_VISIBILITY_TIMEOUT."
            )


def problems(conf: Any) -> list[str]:
    """What in the Celery configuration ``conf`` and the declared subscribers would lose or duplicate messages."""
    found: list[str] = []
    accepted = set(conf.accept_content or [])
    unsafe = sorted(accepted - {"json", "application/json"})
    if unsafe:
        found.append(
            f"CELERY_ACCEPT_CONTENT accepts {', '.join(unsafe)}; accept only 'json' "
            "(a pickled message can run code in the worker)"
        )
    if conf.task_serializer != "json" or conf.result_serializer != "json":
        found.append("CELERY_TASK_SERIALIZER and CELERY_RESULT_SERIALIZER must be 'json'")
    if conf.task_acks_late and not conf.task_reject_on_worker_lost:
        found.append(
            "CELERY_TASK_ACKS_LATE is on but CELERY_TASK_REJECT_ON_WORKER_LOST is off: "
            "a task whose worker dies would be acknowledged and lost; turn it on"
        )
    if conf.task_acks_late and conf.task_acks_on_timeout is not False:
        found.append(
            "CELERY_TASK_ACKS_LATE is on but CELERY_TASK_ACKS_ON_TIMEOUT is not off: a task killed by its "
            "hard time limit would be acknowledged and lost; set it to False"
        )
    visibility = float(conf.broker_transport_options.get("visibility_timeout", settings.EVENTBUS_VISIBILITY_TIMEOUT))
    if visibility <= settings.EVENTBUS_RETRY_MAX_DELAY:
        found.append(
            f"EVENTBUS_RETRY_MAX_DELAY ({settings.EVENTBUS_RETRY_MAX_DELAY:g}s) is not below the visibility "
            f"timeout ({visibility:g}s); lower it or raise CELERY_VISIBILITY_TIMEOUT"
        )
    for subscription in registry.all_subscriptions():
        task = subscription.task
        if task.acks_late and not task.reject_on_worker_lost:
            found.append(f"subscriber {subscription.name}: acks_late without reject_on_worker_lost")
        if task.acks_late and task.acks_on_timeout:
            found.append(f"subscriber {subscription.name}: acks_late with acks_on_timeout (a timed-out task is lost)")
        for what, seconds in (
            ("time_limit", subscription.time_limit),
            ("retry cap", subscription.retry.max_delay),
        ):
            if seconds is not None and seconds >= visibility:
                found.append(
                    f"subscriber {subscription.name}: {what} ({seconds:g}s) is not below the visibility "
                    f"timeout ({visibility:g}s); lower it or raise CELERY_VISIBILITY_TIMEOUT"
                )
        limit = subscription.time_limit
        if limit is not None and limit >= settings.EVENTBUS_REDELIVER_AFTER:
            found.append(
                f"subscriber {subscription.name}: time_limit ({limit:g}s) is not below EVENTBUS_REDELIVER_AFTER "
                f"({settings.EVENTBUS_REDELIVER_AFTER:g}s): the reconciler would send again deliveries still "
                "running; raise EVENTBUS_REDELIVER_AFTER"
            )
    limits = [(f"subscriber {s.name}: time_limit", s.time_limit) for s in registry.all_subscriptions()]
    found += stall_problems(settings.EVENTBUS_STALL_AFTER, [*limits, ("CELERY_TASK_TIME_LIMIT", conf.task_time_limit)])
    from eventbus.operations import retention_tables  # imports models: only once Django is ready

    found += retention_tables.problems(visibility)
    return found


def stall_margin(stall_after: float) -> float:
    """Seconds EVENTBUS_STALL_AFTER must exceed a time limit by: a worker's note that its queues were empty
    is up to one heartbeat old, and a finish is written up to 1 s late (eventbus/observability/progress.py)."""
    from eventbus.observability.progress import WRITE_INTERVAL, heartbeat_interval

    return heartbeat_interval(stall_after) + WRITE_INTERVAL


def stall_problems(stall_after: float, limits: Iterable[tuple[str, float | None]]) -> list[str]:
    """A worker busy with its longest task must not be called stalled: EVENTBUS_STALL_AFTER must exceed each
    hard time limit in ``limits`` ((what, seconds or None) pairs) by ``stall_margin``."""
    margin = stall_margin(stall_after)
    return [
        f"EVENTBUS_STALL_AFTER ({stall_after:g}s) must exceed {what} ({seconds:g}s) by at least {margin:g}s: "
        "a worker busy with its longest task would be reported stalled. Raise EVENTBUS_STALL_AFTER or lower "
        "the time limit."
        for what, seconds in limits
        if seconds is not None and stall_after < seconds + margin
    ]


def refuse_unsafe(conf: Any) -> None:
    """Exit the process with every problem listed, if there is any."""
    found = problems(conf)
    if found:
        raise SystemExit("refusing to start: unsafe settings\n  - " + "\n  - ".join(found))
