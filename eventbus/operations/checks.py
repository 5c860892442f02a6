"""Settings that would lose or duplicate messages stop a worker at start, with a message saying what to change.

Checked when a worker starts (``worker_init``) and by ``manage.py check``:

- a task acknowledged late must be rejected (put back) when its worker dies
  or its hard time limit kills it, or that message is lost;
- every time limit and retry countdown must stay below the Redis visibility
  timeout, or Redis delivers the task a second time while the first still
  runs or waits (kombu#337);
- no serializer but JSON may be accepted: a pickled message runs code;
- the reconciler's ``EVENTBUS_REDELIVER_AFTER`` must exceed every task time
  limit, or it sends again deliveries that are still running;
- the ledger must be kept longer than a late copy of a delivery can still
  arrive, or that copy takes effect twice (eventbus/operations/retention_tables.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from eventbus.contract import registry
from eventbus.operations import retention_tables


def problems(conf: Any) -> list[str]:
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
    found += retention_tables.problems(visibility)
    return found


def refuse_unsafe(conf: Any) -> None:
    """Exit the process with every problem listed, if there is any."""
    found = problems(conf)
    if found:
        raise SystemExit("refusing to start: unsafe settings\n  - " + "\n  - ".join(found))
