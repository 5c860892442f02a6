"""Stop consuming a queue for a while, and come back on its own: one of the failures a person can cause.

``pause(queue, seconds)`` asks the workers that consume ``queue`` to stop
(Celery's remote control, ``cancel_consumer``, addressed to those workers
only), notes which ones in Redis with that expiry, and sends a
``devinbox.resume_queue`` task on the ``eventbus`` queue with that countdown:
the queue comes back after ``seconds`` whether or not anyone clicks again.
``resume`` brings it back at once (``add_consumer`` to the same workers; a
worker that already consumes it ignores that). A worker restarted meanwhile
consumes its queues again by itself.

Only the application's queues can be paused: pausing ``eventbus`` would stop
the very task that resumes it, and ``dead_letter`` the way failures are kept.
"""

from __future__ import annotations

import json
import logging

from celery import Celery

from devinbox.faults import bounded, classroom_key, redis_client
from project import queues

log = logging.getLogger(__name__)

PAUSABLE = (queues.NOTIFICATIONS, queues.ANALYTICS, queues.TELEMETRY)
CONTROL_TIMEOUT = 1.0
"""Seconds to wait for the workers' answers to inspect and cancel_consumer."""


class NothingToPause(Exception):
    """No worker answered as a consumer of the queue."""


def _pause_key(queue: str) -> str:
    return classroom_key(f"paused:{queue}")


def _app() -> Celery:
    from project.celery import app

    return app


def consumers_of(queue: str) -> list[str]:
    """The worker nodes that say they consume ``queue`` now."""
    active = _app().control.inspect(timeout=CONTROL_TIMEOUT).active_queues() or {}
    return sorted(worker for worker, consumed in active.items() if any(q.get("name") == queue for q in consumed))


def pause(queue: str, seconds: int) -> tuple[int, list[str]]:
    """Stop the consumers of ``queue`` for ``seconds`` (bounded); returns the seconds and the workers paused."""
    if queue not in PAUSABLE:
        raise ValueError(f"only {', '.join(PAUSABLE)} can be paused, not {queue!r}")
    seconds = bounded(seconds)
    workers = consumers_of(queue)
    if not workers:
        raise NothingToPause(f"no worker consumes {queue} now: nothing to pause")
    from devinbox.tasks import resume_queue

    # The way back is on its way before the pause starts: it cannot be forgotten.
    resume_queue.apply_async((queue, workers), countdown=seconds, queue=queues.EVENTBUS)
    redis_client().set(_pause_key(queue), json.dumps(workers), px=seconds * 1000)
    _app().control.cancel_consumer(queue, destination=workers, reply=True, timeout=CONTROL_TIMEOUT)
    log.warning("classroom: %s stops consuming %s for %d s", ", ".join(workers), queue, seconds)
    return seconds, workers


def resume(queue: str, workers: list[str] | None = None) -> list[str]:
    """Consume ``queue`` again on ``workers`` (default: those its pause noted); returns them."""
    noted = redis_client().get(_pause_key(queue))
    if workers is None:
        workers = json.loads(noted) if noted else []
    redis_client().delete(_pause_key(queue))
    if workers:
        _app().control.add_consumer(queue, destination=workers, reply=True, timeout=CONTROL_TIMEOUT)
        log.warning("classroom: %s consume %s again", ", ".join(workers), queue)
    return workers


def paused() -> dict[str, float]:
    """Each paused queue and the seconds its pause has left."""
    client = redis_client()
    left = {queue: int(client.pttl(_pause_key(queue))) for queue in PAUSABLE}
    return {queue: ms / 1000 for queue, ms in left.items() if ms > 0}
