"""A delivery's Redis bookkeeping in two round trips: one before the handler, one after.

A welcome email used to cost eleven Redis round trips: the delivery count (a
MULTI of INCR and EXPIRE), the effect lock, the rate limit's token, the
breaker's check, and after the send the lock's release, the breaker's
success, the first-failure key, the latency histogram (a pipeline) and the
delivery count again, each a command and a wait of its own. Each is small,
and together they were a tenth of a pool process's time in figure 1 of
docs/benchmarks.md. Here they travel in two pipelines:

- ``begin``: count the start (eventbus/delivery/attempts.py) and, for a handler
  whose effect is outside the database, take the effect lock
  (eventbus/delivery/effectlock.py); for a provider with a rate limit and a circuit
  breaker, take the token and look at the breaker; all in one round trip
  (the breaker's full check, which may make this delivery the probe, is a
  second one only when the breaker is not closed);
- ``finish``: release the lock, record the breaker's success
  (eventbus/protection/breaker.py), clear the delivery count and first failure, and add
  the latency (eventbus/observability/latency.py), in one round trip;
- ``finish_many``: the same for a whole batch (eventbus/delivery/batch.py), with
  its two counters (batches, events batched), in one round trip.

What each command does is unchanged, and so is their order but for one:
the token is taken before the ledger is asked (``begin`` says why). The lock,
the token and the breaker are not best effort: when Redis cannot be reached,
``begin`` raises if it was asked for any of them (the delivery is retried, as
when their own calls failed), and otherwise reports a first start, as the
delivery count always did. ``finish`` runs after the effect
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

from eventbus.delivery import attempts as deliveries
from eventbus.delivery import effectlock
from eventbus.observability import counters, latency
from eventbus.protection.breaker import CLOSED, CircuitBreaker
from eventbus.redis import client

if TYPE_CHECKING:
    from eventbus.contract.registry import Limiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    token_wait: float
    """Seconds until the rate limit grants a token; 0.0 when this delivery took one (or there is no limit)."""
    breaker_closed: bool
    """The breaker read as closed (or there is none): call the provider. Otherwise ask its ``before_call``."""


OPEN_DOOR = Admission(token_wait=0.0, breaker_closed=True)
"""No limiter and no breaker: nothing to wait for."""


@dataclass(frozen=True)
class Begun:
    starts: int
    """How many times this attempt has started, this one included (1 the first time)."""
    token: str | None
    """The effect lock's token; None when no lock was asked for or another delivery holds it."""
    admission: Admission = OPEN_DOOR
    """The rate limit's token and a look at the breaker, when a limiter or a breaker was given."""


def begin(
    task_id: str,
    retries: int,
    lock: tuple[str, object, float] | None = None,
    *,
    limiter: Limiter | None = None,
    breaker: CircuitBreaker | None = None,
) -> Begun:
    """Count this start, and in the same round trip take what the delivery needs before its effect.

    ``lock=(subscriber, event id, seconds)``: take the effect lock.
    ``limiter``: take a rate-limit token, as its own ``try_acquire`` would.
    ``breaker``: read its state only. A closed breaker (the common case)
    needs nothing more; an open or half-open one is for its ``before_call``
    to decide (wait, or go ahead as the probe), which the caller asks once it
    holds a token, so that a probe never waits for one.

    The token is taken before the ledger says whether the event is done: a
    delivery that then turns out to be a duplicate, or finds the lock taken,
    has spent a token without calling the provider. The limit errs towards
    fewer calls, never more, and those cases are rare; asking for the token
    after the ledger cost every email a round trip of its own.

    Raises ``redis.RedisError`` when Redis cannot be reached and a lock, a
    token or the breaker was asked for (the delivery is retried); a bare
    count is best effort and reports a first start.
    """
    connection = client()
    pipe = connection.pipeline(transaction=False)
    deliveries.count_start(pipe, task_id, retries)
    token = None
    if lock is not None:
        subscriber, event_id, seconds = lock
        token = uuid.uuid4().hex
        effectlock.acquire_into(pipe, subscriber, event_id, seconds, token)
    call = limiter.acquire_call() if limiter is not None else None
    token_reply = len(pipe)
    if call is not None:
        script, keys, args = call
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    if breaker is not None:
        pipe.hget(breaker.redis_key, "state")
    needed = lock is not None or limiter is not None or breaker is not None
    try:
        replies = pipe.execute(raise_on_error=False)
        if call is not None and isinstance(replies[token_reply], NoScriptError):
            script, keys, args = call
            replies[token_reply] = script(keys=keys, args=args, client=connection)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            raise failed[0]
    except redis.RedisError as exc:
        if needed:
            raise
        log.warning("delivery count of task %s not kept: %s", task_id, exc)
        return Begun(starts=1, token=None)
    starts = int(replies[0])
    taken = bool(replies[2]) if lock is not None else False
    admission = OPEN_DOOR
    if call is not None or breaker is not None:
        admission = Admission(
            token_wait=int(replies[token_reply][0]) / 1_000_000 if call is not None else 0.0,
            breaker_closed=breaker is None or replies[-1] in (None, CLOSED),
        )
    return Begun(starts=starts, token=token if taken else None, admission=admission)


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
    """A batch is done (eventbus/delivery/batch.py): its latencies, its counts (one batch, so many events
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
