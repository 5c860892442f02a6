"""Celery router: a subscriber's task goes to the queue its ``@subscriber`` declaration names,
the bus's own tasks to theirs.

Dispatch names the queue explicitly too; this router covers every other way a
subscriber task can be sent (a replay from Flower, ``task.delay()`` in a shell).
"""

from __future__ import annotations

from typing import Any

from eventbus.contract import registry
from project import queues

# The bus's own tasks; every other task goes where its subscriber says, or to the default queue.
_OWN_TASKS = {
    "eventbus.store_dead_letter": queues.DEAD_LETTER,
    "eventbus.relay_outbox": queues.EVENTBUS,
    "eventbus.purge_dead_letters": queues.EVENTBUS,
}


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    subscription = registry.find(name)
    queue = subscription.queue if subscription is not None else _OWN_TASKS.get(name)
    if queue is None:
        return None
    return {"queue": queue, "routing_key": queue}
