"""Attempts in Redis, per task: how often an attempt started, when the task first failed.

An attempt is one run of a task (``retries`` names it: 0 the first time, one
more per retry). The broker redelivers an attempt whose worker died; its
starts are counted so that one that kills its worker every time is
dead-lettered (eventbus/delivery/guards/attempts.py). Every orderly end of an
attempt clears its count (eventbus/delivery/outcomes.py, and the round trip
after an effect); the first failure is kept across attempts for the dead
letter, and cleared once the effect happened.

Best effort: when Redis cannot be written, the task runs as if this was its
first start, and the failure is logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from eventbus.redis import client, key

log = logging.getLogger(__name__)

# Long enough to outlive any retry schedule; short enough that Redis forgets.
TTL_SECONDS = 7 * 24 * 3600


def _starts_key(task_id: str, retries: int) -> str:
    return key("deliveries", task_id, str(retries))


def _failure_key(task_id: str) -> str:
    return key("first-failure", task_id)


def count_into(pipe: redis.client.Pipeline, task_id: str, retries: int) -> None:
    """Count one start of this attempt, queued on ``pipe``; its first reply is how many starts it has had."""
    pipe.incr(_starts_key(task_id, retries))
    pipe.expire(_starts_key(task_id, retries), TTL_SECONDS)


def clear_into(pipe: redis.client.Pipeline, attempts: list[tuple[str, int]]) -> None:
    """The attempts ``(task id, retries)`` ended with their effect: ``ended`` and ``forget`` of each,
    queued on ``pipe`` as one DEL."""
    if attempts:
        starts = [_starts_key(task_id, retries) for task_id, retries in attempts]
        pipe.delete(*starts, *(_failure_key(task_id) for task_id, _ in attempts))


def uncount_many(attempts: list[tuple[str, int]]) -> None:
    """Take back one start of each attempt ``(task id, retries)``: it is counted again where it goes next."""
    if not attempts:
        return
    try:
        pipe = client().pipeline(transaction=False)
        for task_id, retries in attempts:
            pipe.decr(_starts_key(task_id, retries))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("start counts of %d attempts not taken back: %s", len(attempts), exc)


def ended(task_id: str, retries: int) -> None:
    """The attempt ended in an orderly way (skipped, retried, rescheduled, dead-lettered)."""
    try:
        client().delete(_starts_key(task_id, retries))
    except redis.RedisError as exc:
        log.warning("start count of task %s not cleared: %s", task_id, exc)


def failed(task_id: str) -> datetime:
    """Note a failure; returns the time of the task's first failure."""
    now = datetime.now(UTC)
    try:
        pipe = client().pipeline()
        pipe.setnx(_failure_key(task_id), now.isoformat())
        pipe.get(_failure_key(task_id))
        pipe.expire(_failure_key(task_id), TTL_SECONDS)
        _, first, _ = pipe.execute()
        return datetime.fromisoformat(first) if first else now
    except redis.RedisError as exc:
        log.warning("first failure of task %s not kept: %s", task_id, exc)
        return now


def first_failure(task_id: str) -> datetime | None:
    try:
        value = client().get(_failure_key(task_id))
    except redis.RedisError:
        return None
    return datetime.fromisoformat(value) if value else None


def forget(task_id: str) -> None:
    try:
        client().delete(_failure_key(task_id))
    except redis.RedisError as exc:
        log.warning("first failure of task %s not cleared: %s", task_id, exc)
