"""Attempts guard: a delivery that keeps killing its worker is dead-lettered, not run again.

An attempt is one run of a task (``retries`` names it: 0 the first time, one
more per retry). A task whose worker process dies is redelivered by the
broker; one that kills its worker every time would loop forever. Each start
of an attempt is counted in Redis; after ``EVENTBUS_MAX_DELIVERIES`` starts
without an orderly end the delivery is dead-lettered as ``worker_lost``
(RabbitMQ's delivery-limit, SQS's maxReceiveCount).

Every orderly end of an attempt clears its count (eventbus/delivery/outcomes.py,
and this guard's ``after`` once the effect happened). The time of the task's
first failure is kept here too, across attempts, for its dead letter, and
cleared once the effect happened.

Best effort: when Redis cannot be written, the attempt counts as a first
start, and the failure is logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

import redis
from django.conf import settings

from eventbus.deadletters import Kind
from eventbus.delivery.guards import AfterSent, Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, dead_letter
from eventbus.fastpath.bookkeeping import Reply, RoundTrip
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


class Attempts(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        replies = {
            delivery: round_trip.queue(partial(count_into, task_id=delivery.task_id, retries=delivery.retries))
            for delivery in batch.deliveries
        }

        def check(going: list[Delivery]) -> list[Verdict]:
            return [_verdict(replies[delivery]) for delivery in going]

        return check

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        if outcome.goes_on:
            finished = [(delivery.task_id, delivery.retries) for delivery in batch.deliveries]
            round_trip.queue(partial(clear_into, attempts=finished))
        return None


def _verdict(reply: Reply) -> Verdict:
    starts = int(reply.first) if reply.received else 1
    if starts <= settings.EVENTBUS_MAX_DELIVERIES:
        return GO
    return dead_letter(
        Kind.WORKER_LOST,
        RuntimeError(
            f"delivered {settings.EVENTBUS_MAX_DELIVERIES} times without finishing: the worker process died each time"
        ),
    )


GUARD = Attempts()
