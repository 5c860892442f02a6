"""A delivery, start to end, in one place: receive -> guards -> effect -> finish -> act.

``STEPS`` lists the guards in the order they decide (Dramatiq's
``default_middleware``): each is a module of eventbus/delivery/guards/ with the
same two hooks, and answers a verdict (eventbus/delivery/verdict.py). Only
this module and the acting in eventbus/delivery/outcomes.py act on verdicts.

What happens to one delivery:

1. receive: the task decoded the envelope (eventbus/delivery/consumer.py; a
   poison message is dead-lettered there);
2. ``check``: every guard queues its Redis commands on one round trip, and
   then, in ``STEPS`` order, says whether the delivery goes on. The first
   verdict that is not ``GO`` ends the checks: a guard after it is not asked
   (the ledger is asked only under the effect lock, the breaker's probe slot
   is taken only with a token);
3. ``run_effect``: the handler runs in a transaction with its ledger entry (its
   database effects and the "done" mark commit together), or, for an effect
   outside the database (``transactional=False``: an email), outside any
   transaction under the effect lock, its ledger entry written right after
   it. A failure is a ``fail`` verdict: transient or not, per the
   subscription's retry policy;
4. ``finish``: every guard's end, and the latency of an effect that
   happened, in one round trip after the effect (best effort: the lock
   expires by itself, the breaker's next success closes it);
5. act: skip, wait, retry, dead-letter, or report the effect done.

Two Redis round trips per delivery that goes through, whatever its guards
(eventbus/fastpath/bookkeeping.py says what that buys). The batching
consumer (eventbus/delivery/batch.py) runs the same ``check`` and ``finish``
over its list: two round trips per batch.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, transaction

from eventbus.delivery import ledger, outcomes, unrecorded
from eventbus.delivery.guards import (
    Batch,
    Delivery,
    Guard,
    attempts,
    breaker,
    duplicate,
    effectlock,
    ordering,
    ratelimit,
)
from eventbus.delivery.verdict import ENDED, GO, Verdict, fail
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.observability import counters, latency

if TYPE_CHECKING:
    from eventbus.delivery.consumer import ConsumerTask

log = logging.getLogger(__name__)

STEPS: tuple[Guard, ...] = (
    attempts.GUARD,  # one that keeps killing its worker is dead-lettered
    effectlock.GUARD,  # an effect outside the database: one delivery of the event at a time
    duplicate.GUARD,  # the ledger says it is done
    ordering.GUARD,  # stale, or waiting for its predecessor
    ratelimit.GUARD,  # a token from the provider's limiter
    breaker.GUARD,  # the provider's circuit breaker
)


class LedgerNotWritten(Exception):
    """A handler outside the database did its effect, and its ledger entry could not be written.

    Retried like a transient failure: the effect happens again (at least
    once), which its idempotency key makes harmless.
    """


def deliver(task: ConsumerTask, delivery: Delivery) -> outcomes.Result:
    """Check, run the effect, finish and act on the verdict; raises Retry when the delivery waits or is retried."""
    batch = Batch(delivery.subscription, [delivery])
    try:
        (verdict,) = check(batch)
    except BaseException:
        finish(batch, ENDED)  # gives the effect lock back, if it was taken
        raise
    if verdict.goes_on:
        verdict = run_effect(task, delivery)
    finish(batch, verdict)
    return outcomes.act(task, delivery, verdict)


def check(batch: Batch) -> list[Verdict]:
    """Each delivery's verdict, from the guards in ``STEPS`` order, after one Redis round trip.

    Raises ``redis.RedisError`` when that round trip fails and a guard could
    not go on without it (a lock, a token, the breaker); the attempt count
    alone is best effort.
    """
    round_trip = RoundTrip()
    checks = [guard.before(batch, round_trip) for guard in STEPS]
    try:
        round_trip.send()
    except redis.RedisError as exc:
        if round_trip.required:
            raise
        log.warning("attempt count of %d deliveries not kept: %s", len(batch.deliveries), exc)
    verdicts = dict.fromkeys(batch.deliveries, GO)
    going = list(batch.deliveries)
    for guard_check in checks:
        if not going:
            break
        for delivery, verdict in zip(going, guard_check(going), strict=True):
            verdicts[delivery] = verdict
        going = [delivery for delivery in going if verdicts[delivery].goes_on]
    return [verdicts[delivery] for delivery in batch.deliveries]


def run_effect(task: ConsumerTask, delivery: Delivery) -> Verdict:
    """Call the handler and write its ledger entry; ``GO`` once both are done."""
    subscription, event = delivery.subscription, delivery.event
    worker = task.request.hostname or ""
    started = time.monotonic()
    try:
        if subscription.transactional:
            with transaction.atomic():
                entry = ledger.claim(event, subscription.name, delivery.task_id, worker)
                if entry is None:
                    return duplicate.DUPLICATE
                subscription.call_handler(event)
                ledger.record_runtime(entry, (time.monotonic() - started) * 1000)
        elif not _outside_transaction(delivery, worker, started):
            return duplicate.DUPLICATE
    except Exception as exc:
        return fail(exc, transient=isinstance(exc, INFRASTRUCTURE) or subscription.retry.is_transient(exc))
    return GO


INFRASTRUCTURE = (SoftTimeLimitExceeded, LedgerNotWritten, OperationalError, InterfaceError)
"""Failures of what is around a handler, transient whatever its retry policy says: a time limit, a ledger
entry not written, and the database unavailable now (down, restarting, failing over, or a lock waited out;
the handler's own reads, such as the email's address, fail so too). A database restart must cost a retry,
never a permanent dead letter. Other database errors (a ``ProgrammingError``) are bugs and stay permanent."""


def _outside_transaction(delivery: Delivery, worker: str, started: float) -> bool:
    """Run a handler whose effect is outside the database; False when another delivery already did it.

    The handler runs outside any transaction (it holds no database lock
    while it talks to its provider), under the effect lock that keeps a
    concurrent duplicate out; then the ledger entry is written, in one
    INSERT. A worker that dies between the effect and the entry leaves the
    effect to happen again on redelivery: at least once, which is why such
    handlers carry an idempotency key (the email's Message-ID). When the
    database refuses the entry, the effect is noted in Redis, so that the
    retry (the effect lock's guard reads the note) writes the entry without
    doing the effect again (eventbus/delivery/unrecorded.py).
    """
    subscription, event = delivery.subscription, delivery.event
    if not delivery.effect_done:
        subscription.call_handler(event)
    runtime_ms = (time.monotonic() - started) * 1000
    try:
        return ledger.record(event, subscription.name, delivery.task_id, worker, runtime_ms)
    except Exception as exc:
        unrecorded.note(event.id, subscription.name)
        raise LedgerNotWritten(f"the effect happened, its ledger entry was not written: {exc}") from exc


def finish(batch: Batch, outcome: Verdict) -> None:
    """Every guard's end of the deliveries, and, for an effect that happened (``GO``), its delivery and
    latency counted, in one Redis round trip (none when there is nothing to send). The guards queue their
    ends in the reverse of ``STEPS``, as middleware unwinds.

    Best effort: a failure is logged. What a guard does once the round trip
    was sent (the breaker's failure count) may raise.
    """
    round_trip = RoundTrip()
    after_sent = [guard.after(batch, round_trip, outcome) for guard in reversed(STEPS)]
    if outcome.goes_on:
        name = batch.subscription.name
        now = datetime.now(UTC)
        latencies = [(now - delivery.event.occurred_at).total_seconds() for delivery in batch.deliveries]
        round_trip.queue(lambda pipe: latency.observe_into(pipe, name, latencies))
        if batch.bulk:
            round_trip.queue(lambda pipe: counters.incr_into(pipe, counters.BATCHES, name))
            round_trip.queue(lambda pipe: counters.incr_into(pipe, counters.BATCHED, name, len(latencies)))
    try:
        round_trip.send()
    except redis.RedisError as exc:
        log.warning(
            "the end of %d deliveries to %s not recorded in full (an effect lock expires by itself): %s",
            len(batch.deliveries),
            batch.subscription.name,
            exc,
        )
    for then in after_sent:
        if then is not None:
            then()
