"""Celery router: a subscriber's task goes to the queue its ``@subscriber`` declaration names.

Dispatch names the queue explicitly too; this router covers every other way a
subscriber task can be sent (a replay from Flower, ``task.delay()`` in a shell).
"""

from __future__ import annotations

from typing import Any

from eventbus import registry


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    subscription = registry.find(name)
    if subscription is None:
        return None
    return {"queue": subscription.queue, "routing_key": subscription.queue}
