"""Delivery bookkeeping in Redis, per task: how often it started, when it first failed.

A task whose worker process dies is redelivered by the broker. One that kills
its worker every time (a segfaulting library, memory blow-up) would loop
forever: after ``EVENTBUS_MAX_DELIVERIES`` starts without an orderly end it is
dead-lettered instead (RabbitMQ's delivery-limit, SQS's maxReceiveCount).

Bookkeeping is best effort: when Redis cannot be written, the task runs as if
this was its first delivery, and the failure is logged.
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


def started(task_id: str, retries: int) -> int:
    """Count one start of this attempt; returns how many starts it has had (1 the first time)."""
    try:
        pipe = client().pipeline()
        pipe.incr(_starts_key(task_id, retries))
        pipe.expire(_starts_key(task_id, retries), TTL_SECONDS)
        count, _ = pipe.execute()
        return int(count)
    except redis.RedisError as exc:
        log.warning("delivery count of task %s not kept: %s", task_id, exc)
        return 1


def count_start(pipe: redis.client.Pipeline, task_id: str, retries: int) -> None:
    """``started``'s commands, queued on ``pipe`` (eventbus/fastpath/bookkeeping.py); its first reply is the count."""
    pipe.incr(_starts_key(task_id, retries))
    pipe.expire(_starts_key(task_id, retries), TTL_SECONDS)


def count_into(pipe: redis.client.Pipeline, task_id: str, retries: int) -> None:
    """Count one start of this attempt, queued on ``pipe``; its first reply is how many starts it has had."""
    pipe.incr(_starts_key(task_id, retries))
    pipe.expire(_starts_key(task_id, retries), TTL_SECONDS)


def clear_into(pipe: redis.client.Pipeline, attempts: list[tuple[str, int]]) -> None:
    """The attempts ``(task id, retries)`` ended with their effect: ``ended`` and ``forget`` of each,
    queued on ``pipe`` as one DEL."""
    if attempts:
        pipe.delete(*_ended_keys(attempts))


def started_many(attempts: list[tuple[str, int]]) -> list[int]:
    """``started`` for many ``(task id, retries)`` at once, in one pipeline."""
    if not attempts:
        return []
    try:
        pipe = client().pipeline(transaction=False)
        for task_id, retries in attempts:
            pipe.incr(_starts_key(task_id, retries))
            pipe.expire(_starts_key(task_id, retries), TTL_SECONDS)
        replies = pipe.execute()
        return [int(count) for count in replies[::2]]
    except redis.RedisError as exc:
        log.warning("delivery counts of %d tasks not kept: %s", len(attempts), exc)
        return [1] * len(attempts)


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
        log.warning("delivery counts of %d tasks not taken back: %s", len(attempts), exc)


def ended_many_into(pipe: redis.client.Pipeline, attempts: list[tuple[str, int]]) -> None:
    """``ended_many``'s command, queued on ``pipe`` (eventbus/fastpath/bookkeeping.py)."""
    if attempts:
        pipe.delete(*_ended_keys(attempts))


def _ended_keys(attempts: list[tuple[str, int]]) -> list[str]:
    keys = [_starts_key(task_id, retries) for task_id, retries in attempts]
    return keys + [_failure_key(task_id) for task_id, _ in attempts]


def ended(task_id: str, retries: int) -> None:
    """The attempt ended in an orderly way (done, retried, rescheduled, dead-lettered)."""
    try:
        client().delete(_starts_key(task_id, retries))
    except redis.RedisError as exc:
        log.warning("delivery count of task %s not cleared: %s", task_id, exc)


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
