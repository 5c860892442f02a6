"""Celery router: a subscriber's task goes to the queue its ``@subscriber`` declaration names,
the bus's own tasks to theirs.

Dispatch names the queue explicitly too; this router covers every other way a
subscriber task can be sent (a replay from Flower, ``task.delay()`` in a shell).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from eventbus.contract import registry

# The bus's own tasks, by the setting that names their queue; every other task
# goes where its subscriber says, or to the default queue.
_OWN_TASKS = {
    "eventbus.store_dead_letter": "EVENTBUS_DEAD_LETTER_QUEUE",
    "eventbus.relay_outbox": "EVENTBUS_HOUSEKEEPING_QUEUE",
    "eventbus.purge_dead_letters": "EVENTBUS_HOUSEKEEPING_QUEUE",
}


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    subscription = registry.find(name)
    if subscription is not None:
        queue: str | None = subscription.queue
    else:
        setting = _OWN_TASKS.get(name)
        queue = getattr(settings, setting) if setting is not None else None
    if queue is None:
        return None
    return {"queue": queue, "routing_key": queue}
