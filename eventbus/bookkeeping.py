"""A delivery's Redis bookkeeping in three round trips: two before the handler, one after.

A welcome email used to cost nine Redis round trips besides its rate limit
and breaker check (two more): the delivery count (a MULTI of INCR and EXPIRE), the
effect lock, and after the send the lock's release, the breaker's success,
the first-failure key, the latency histogram (a pipeline) and the delivery
count again, each a command and a wait of its own. Each is small, and
together they were 7% of a pool process's time in figure 1 of
docs/benchmarks.md. Here they travel in three pipelines:

- ``begin``: count the start (eventbus/deliveries.py) and, for a handler
  whose effect is outside the database, take the effect lock
  (eventbus/effectlock.py), in one round trip;
- ``admit``: after the ledger's "not done yet", take the provider's rate
  limit token and look at its breaker, in one round trip (the breaker's full
  check, which may make this delivery the probe, is a second one only when
  the breaker is not closed);
- ``finish``: release the lock, record the breaker's success
  (eventbus/breaker.py), clear the delivery count and first failure, and add
  the latency (eventbus/latency.py), in one round trip;
- ``finish_many``: the same for a whole batch (eventbus/batching.py), with
  its two counters (batches, events batched), in one round trip.

What each command does and in what order is unchanged; only the waiting is
shared. The lock is the one part that is not best effort: when Redis cannot
be reached, ``begin`` raises if it was asked for a lock (the delivery is
retried, as when the lock's own call failed), and otherwise reports a first
start, as the delivery count always did. ``finish`` runs after the effect
and its ledger entry: a failure there is logged, never raised (the lock
expires by itself, the breaker's next success closes it).

Lua scripts are sent as EVALSHA of a script loaded once per process; a
server that has lost them (restarted, flushed) answers NOSCRIPT for those
commands only, which are then run again one by one (redis-py loads the
script). redis-py's own pipelined scripts would ask SCRIPT EXISTS before
every pipeline: one round trip more each time.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from eventbus import counters, deliveries, effectlock, latency
from eventbus.breaker import CLOSED, CircuitBreaker
from eventbus.redis import client

if TYPE_CHECKING:
    from eventbus.registry import Limiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Begun:
    starts: int
    """How many times this attempt has started, this one included (1 the first time)."""
    token: str | None
    """The effect lock's token; None when no lock was asked for or another delivery holds it."""


def begin(task_id: str, retries: int, lock: tuple[str, object, float] | None = None) -> Begun:
    """Count this start and, with ``lock=(subscriber, event id, seconds)``, take the effect lock.

    Raises ``redis.RedisError`` only when a lock was asked for and Redis could not be reached.
    """
    pipe = client().pipeline(transaction=False)
    deliveries.count_start(pipe, task_id, retries)
    token = None
    if lock is not None:
        subscriber, event_id, seconds = lock
        token = uuid.uuid4().hex
        effectlock.acquire_into(pipe, subscriber, event_id, seconds, token)
    try:
        replies = pipe.execute()
    except redis.RedisError as exc:
        if lock is not None:
            raise
        log.warning("delivery count of task %s not kept: %s", task_id, exc)
        return Begun(starts=1, token=None)
    starts = int(replies[0])
    taken = bool(replies[2]) if lock is not None else False
    return Begun(starts=starts, token=token if taken else None)


@dataclass(frozen=True)
class Admission:
    token_wait: float
    """Seconds until the rate limit grants a token; 0.0 when this delivery took one (or there is no limit)."""
    breaker_closed: bool
    """The breaker read as closed (or there is none): call the provider. Otherwise ask its ``before_call``."""


def admit(limiter: Limiter | None, breaker: CircuitBreaker | None) -> Admission:
    """Take a token from ``limiter`` and read ``breaker``'s state, in one round trip.

    The token comes first, as the limiter's own ``try_acquire`` would take it;
    the breaker is only read. The common case, a closed breaker, needs
    nothing more. A breaker that is open or half-open is for its
    ``before_call`` to decide (wait, or go ahead as the probe): the caller
    asks it only once it holds a token, so a probe never waits for one.
    Raises ``redis.RedisError`` when Redis cannot be reached (the delivery
    is retried), as the limiter and the breaker do.
    """
    if limiter is None and breaker is None:
        return Admission(token_wait=0.0, breaker_closed=True)
    connection = client()
    pipe = connection.pipeline(transaction=False)
    call = limiter.acquire_call() if limiter is not None else None
    if call is not None:
        script, keys, args = call
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    if breaker is not None:
        pipe.hget(breaker.redis_key, "state")
    replies = pipe.execute(raise_on_error=False)
    if call is not None and isinstance(replies[0], NoScriptError):
        script, keys, args = call
        replies[0] = script(keys=keys, args=args, client=connection)
    failed = [reply for reply in replies if isinstance(reply, Exception)]
    if failed:
        raise failed[0]
    token_wait = int(replies[0][0]) / 1_000_000 if call is not None else 0.0
    state = replies[-1] if breaker is not None else None
    return Admission(token_wait=token_wait, breaker_closed=state in (None, CLOSED))


def finish(
    task_id: str,
    retries: int,
    subscriber: str,
    latency_seconds: float,
    *,
    lock: tuple[object, str] | None = None,
    breaker: CircuitBreaker | None = None,
) -> None:
    """The delivery is done: release the lock (``(event id, token)``), close the breaker, clear, count."""
    connection = client()
    pipe = connection.pipeline(transaction=False)
    scripts: list[tuple[int, Script, list[Any], list[Any]]] = []

    def evalsha(script: Script, keys: list[Any], args: list[Any]) -> None:
        scripts.append((len(pipe), script, keys, args))
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    if lock is not None:
        event_id, token = lock
        evalsha(effectlock.release_script(), [effectlock.lock_key(subscriber, event_id)], [token])
    breaker_reply = len(pipe)
    if breaker is not None:
        evalsha(breaker.success_script(), [breaker.redis_key], [])
    deliveries.clear(pipe, task_id, retries)
    latency.observe_into(pipe, subscriber, latency_seconds)
    try:
        replies = pipe.execute(raise_on_error=False)
        for index, script, keys, args in scripts:
            if isinstance(replies[index], NoScriptError):
                replies[index] = script(keys=keys, args=args, client=connection)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            raise failed[0]
    except redis.RedisError as exc:
        log.warning("bookkeeping of task %s (%s) incomplete, the effect lock expires: %s", task_id, subscriber, exc)
        return
    if breaker is not None:
        breaker.note_success(replies[breaker_reply])


def finish_many(subscriber: str, latencies_seconds: list[float], attempts: list[tuple[str, int]]) -> None:
    """A batch is done (eventbus/batching.py): its latencies, its counts (one batch, so many events
    batched) and the end of every attempt, in one round trip."""
    if not attempts:
        return
    pipe = client().pipeline(transaction=False)
    counters.incr_into(pipe, counters.BATCHES, subscriber)
    counters.incr_into(pipe, counters.BATCHED, subscriber, len(attempts))
    latency.observe_many_into(pipe, subscriber, latencies_seconds)
    deliveries.ended_many_into(pipe, attempts)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("bookkeeping of a batch of %d (%s) not complete: %s", len(attempts), subscriber, exc)
