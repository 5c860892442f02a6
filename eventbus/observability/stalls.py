"""The stall verdict: a worker that is alive but no longer consuming (celery#8030, #10205, #10302).

A worker is **stalled** when a queue it consumes has messages waiting (its
depth, read from the broker as backpressure reads it) and it finished no task
for EVENTBUS_STALL_AFTER seconds, counted from the latest of its last finish,
its start (a worker just started is not stalled) and the last time it found
all its queues empty (a worker idle until a burst came is not stalled either).
Its progress comes from eventbus/observability/progress.py.

Why this and not "no finish for a while": an idle worker with an empty
queue finishes nothing and is healthy. Why messages waiting is not enough: a
busy queue has messages waiting while its workers drain it. A worker busy
with long tasks finishes one at least every hard time limit; its idle note is
at most one heartbeat old and a finish is written at most 1 s late: the start
check (eventbus/operations/checks.py) keeps the sum of the three below
EVENTBUS_STALL_AFTER.

Limits, said plainly: a queue kept empty by other workers hides a stalled one
(nothing is lost meanwhile); messages a stalled worker reserved (prefetched)
are not in the depth; and the worker's and the reader's clocks are compared,
so hosts need NTP (a skew of seconds is harmless next to the default 120 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from celery import current_app
from django.conf import settings

from eventbus.observability.progress import WorkerProgress
from eventbus.observability.progress import read as read_progress
from eventbus.protection.backpressure import read_depth


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's verdict, with what it rests on."""

    worker: str
    queues: tuple[str, ...]
    finished: float | None
    """Unix seconds of its last finished task; None: none since it started."""
    quiet_seconds: float
    """Seconds since its last finished task, its start, or its queues were last seen empty: the latest."""
    waiting: dict[str, int]
    """Messages waiting in each of its queues."""
    stalled: bool
    reason: str
    """One line a person reads, e.g. why it is stalled."""


def judge(progress: WorkerProgress, depths: Mapping[str, int], now: float, stall_after: float) -> WorkerHealth:
    """The verdict on one worker (a pure function: the rest of this module only reads its inputs)."""
    since = max((t for t in (progress.finished, progress.started, progress.idle) if t is not None), default=now)
    quiet = max(0.0, now - since)
    waiting = {queue: depths.get(queue, 0) for queue in progress.queues}
    backed_up = sorted(queue for queue, depth in waiting.items() if depth > 0)
    what = "finished nothing" if progress.finished is None else "finished no task"
    if backed_up and quiet >= stall_after:
        queues = ", ".join(f"{queue} ({waiting[queue]} waiting)" for queue in backed_up)
        reason = (
            f"stalled: {progress.worker} {what} for {quiet:.0f}s (EVENTBUS_STALL_AFTER {stall_after:g}s) "
            f"while messages wait in {queues}"
        )
        return WorkerHealth(progress.worker, progress.queues, progress.finished, quiet, waiting, True, reason)
    if progress.finished is not None:
        reason = f"healthy: {progress.worker} finished a task {quiet:.0f}s ago"
    else:
        reason = f"healthy: {progress.worker} started {quiet:.0f}s ago"
    if not backed_up:
        reason += ", nothing waits in its queues"
    return WorkerHealth(progress.worker, progress.queues, progress.finished, quiet, waiting, False, reason)


def queue_depths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues``, read from the broker now (raises when it cannot be read)."""
    with current_app.connection_for_read() as connection:
        channel = connection.default_channel
        return {queue: read_depth(channel, queue) for queue in sorted(set(queues))}


def worker_health(
    workers: Iterable[str] | None = None, depths: Mapping[str, int] | None = None, now: float | None = None
) -> list[WorkerHealth]:
    """The verdict on ``workers`` (node names; None: every worker seen lately), by name.

    ``depths``: queue depths already read (the ops overview's); the queues it
    lacks are read from the broker. Raises ``redis.RedisError`` when Redis cannot
    be read and the broker's errors when a depth cannot be.
    """
    found = read_progress(workers)
    known = dict(depths or {})
    missing = {queue for progress in found for queue in progress.queues} - set(known)
    if missing:
        known.update(queue_depths(missing))
    moment = time.time() if now is None else now
    return [judge(progress, known, moment, settings.EVENTBUS_STALL_AFTER) for progress in found]
