"""Handing an event to the broker: one message per subscriber, each on that subscriber's queue.

Many events go out in batches (eventbus/fastpath/publishing_batch.py): the same
messages as ``apply_async``'s, on Redis pipelined, one round trip per
FLUSH_EVERY events; an event counts as sent only once its batch is flushed.

Backpressure is applied here: a subscriber whose queue is above its
high-water mark gets no message now. A sheddable one loses the event (counted,
logged, and marked in the ledger as shed); a critical one gets it later, from
the relay, which finds the outbox row deferred.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError
from django.db.models import F
from django.utils import timezone

from eventbus.contract import registry
from eventbus.contract.envelope import args_summary
from eventbus.fastpath import marks, publishing_batch, statements
from eventbus.fastpath.publishing_batch import Batch
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import counters, timeline
from eventbus.protection import backpressure, failfast

log = logging.getLogger(__name__)

Wire = Mapping[str, Any]


@dataclass
class Outcome:
    """What dispatch did with one event."""

    event_id: str
    sent: list[str] = field(default_factory=list)
    shed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each shed or deferred subscriber got no message now (its own queue's pressure)."""
    partial: bool = False
    """Sent to some subscribers only (a deferred event's, a redelivery): the row's ``sent_to`` is added to."""


class DispatchError(Exception):
    """The broker failed part way; ``done`` holds the outcomes of the events fully handled before that."""

    def __init__(self, done: list[Outcome], cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.done = done
        self.cause = cause


#: Events whose messages go to the broker in one round trip when many are sent
#: (one pipeline flush on Redis). A failed flush leaves its events unsent.
FLUSH_EVERY = 200


def send(
    wire: Wire,
    producer: Any,
    only: Sequence[str] | None = None,
    batch: Batch | None = None,
    countdown: float | None = None,
) -> Outcome:
    """Publish ``wire`` once per subscriber of its type (fan-out), without retrying.

    ``only`` limits it to those subscribers (a deferred event). Raises on a
    broker failure: the caller decides whether to wait (the relay) or to leave
    the event to the relay (a request). With a ``batch``, the messages are
    added to it, and sent only once the caller flushes it; the queue depth
    backpressure compares with the mark counts the batch's unflushed messages.
    ``countdown`` holds the messages back that many seconds (a redelivery after a broker loss).
    """
    outcome = Outcome(event_id=str(wire["id"]), partial=only is not None)
    args = (wire,)
    # Every subscriber gets the same arguments, named by the event, not its payload.
    argsrepr = args_summary(wire)
    for subscription in registry.subscriptions_for(wire["type"]):
        if only is not None and subscription.name not in only:
            continue
        pressure = backpressure.pressure(producer.channel, subscription.queue)
        if batch is not None and batch.unflushed(subscription.queue):
            depth = pressure.depth + batch.unflushed(subscription.queue)
            pressure = backpressure.Pressure(pressure.queue, depth, pressure.high_water_mark)
        if pressure.above:
            (outcome.deferred if subscription.critical else outcome.shed).append(subscription.name)
            outcome.reasons[subscription.name] = pressure.describe()
            continue
        if batch is not None:
            batch.add(subscription, args, argsrepr, countdown)
        else:
            subscription.task.apply_async(
                args=args,
                queue=subscription.queue,
                routing_key=subscription.queue,
                producer=producer,
                # Fail fast: a request must not wait on a sick broker.
                retry=False,
                countdown=countdown,
                argsrepr=argsrepr,
            )
        outcome.sent.append(subscription.name)
    return outcome


def send_many(
    wires: Iterable[Wire],
    only: Mapping[str, Sequence[str]] | None = None,
    *,
    flush_every: int | None = None,
    countdown: float | None = None,
    request_path: bool = False,
) -> list[Outcome]:
    """Send several events over one producer connection, ``flush_every`` events per round trip.

    ``only`` maps an event id to the subscribers it still has to reach.
    Raises DispatchError at the first failure, naming the events whose
    messages the broker took (those of the flushes that succeeded).
    ``request_path``: from the request path's producer pool, whose every
    socket operation is bounded by EVENTBUS_REQUEST_TIMEOUT (the relay's may wait longer).
    """
    flush_every = flush_every or FLUSH_EVERY
    done: list[Outcome] = []
    unflushed: list[Outcome] = []
    try:
        # The app itself, not the proxy: a batch reads a dozen of its attributes per event.
        app = current_app._get_current_object()
        lent = publishing_batch.request_producer(app) if request_path else app.producer_or_acquire()
        with lent as producer, publishing_batch.batch(app, producer) as batch:
            for wire in wires:
                event_id = str(wire["id"])
                unflushed.append(send(wire, producer, only.get(event_id) if only else None, batch, countdown))
                if len(unflushed) >= flush_every:
                    batch.flush()
                    done += unflushed
                    unflushed = []
            batch.flush()
            done += unflushed
    except Exception as exc:  # the broker's errors are many and transport-specific
        raise DispatchError(done, exc) from exc
    return done


def mark_dispatched(outcomes: Sequence[Outcome], *, request_path: bool = False) -> None:
    """Record in the outbox (and the ledger, for shed events) what dispatch did.

    ``request_path``: settled inside a request; its counters are then written
    with the request path's bound (eventbus/observability/counters.py).

    A row also records which subscribers' messages the broker took
    (``sent_to``) and when (``last_sent_at``): the deliveries the reconciler
    holds the ledger to. For the usual event, sent to all its subscribers at
    once, that is part of the dispatched mark's UPDATE (one per set of
    subscribers, not per event); a partial send adds to the row's list.
    """
    now = timezone.now()
    by_sent: dict[tuple[str, ...], list[str]] = {}
    for o in outcomes:
        if not o.deferred and not o.partial:
            by_sent.setdefault(tuple(o.sent), []).append(o.event_id)
    for sent, complete in by_sent.items():
        # One prepared UPDATE (eventbus/fastpath/statements.py): status dispatched,
        # dispatched_at, dispatch_attempts + 1, no deferral, error or lease,
        # sent_to and last_sent_at; settled_at when nothing was sent.
        statements.mark_dispatched(complete, list(sent), now)
    for outcome in outcomes:
        if outcome.partial or outcome.deferred:
            _settle_partly(outcome, now, request_path)
        for name in outcome.shed:
            _record_shed(outcome.event_id, name)
            counters.incr(counters.SHED, name, request_path=request_path)
            timeline.note(outcome.event_id, name, timeline.Step.SHED, outcome.reasons.get(name, ""))
            log.warning("event %s shed for %s: %s", outcome.event_id, name, outcome.reasons.get(name, ""))


def _settle_partly(outcome: Outcome, now: datetime, request_path: bool = False) -> None:
    """A row some of whose subscribers got their message now, and some wait (deferred) or were sent before."""
    row = OutboxEvent.objects.filter(id=outcome.event_id).values("sent_to", "status").first()
    if row is None:
        return
    sent_to = list(row["sent_to"] or [])
    sent_to += [name for name in outcome.sent if name not in sent_to]
    changes: dict[str, Any] = {
        "sent_to": sent_to,
        "dispatch_attempts": F("dispatch_attempts") + 1,
        "lease_owner": "",
        "lease_until": None,
    }
    if outcome.sent:
        changes["last_sent_at"] = now
    if outcome.deferred:
        changes.update(
            status=OutboxEvent.Status.DEFERRED,
            deferred_subscribers=outcome.deferred,
            last_error="deferred: " + "; ".join(outcome.reasons.get(n, "") for n in outcome.deferred),
        )
    elif row["status"] != OutboxEvent.Status.DISPATCHED:
        changes.update(status=OutboxEvent.Status.DISPATCHED, dispatched_at=now, deferred_subscribers=[], last_error="")
    OutboxEvent.objects.filter(id=outcome.event_id).update(**changes)
    if outcome.deferred:
        for name in outcome.deferred:
            counters.incr(counters.DEFERRED, name, request_path=request_path)
            timeline.note(outcome.event_id, name, timeline.Step.DEFERRED, outcome.reasons.get(name, ""))
        log.warning("event %s held in the outbox for %s: %s", outcome.event_id, outcome.deferred, outcome.reasons)


def _record_shed(event_id: str, subscriber: str) -> None:
    event = OutboxEvent.objects.filter(id=event_id).values("type", "aggregate", "sequence").first()
    if event is None:
        return
    # Already handled or shed: nothing to add.
    with contextlib.suppress(IntegrityError):
        ProcessedEvent.objects.create(
            event_id=event_id,
            subscriber=subscriber,
            outcome=ProcessedEvent.Outcome.SHED,
            event_type=event["type"],
            aggregate=event["aggregate"],
            sequence=event["sequence"],
        )


def record_failure(event_ids: list[str], error: BaseException) -> None:
    OutboxEvent.objects.filter(id__in=event_ids).exclude(status=OutboxEvent.Status.DISPATCHED).update(
        dispatch_attempts=F("dispatch_attempts") + 1,
        last_error=f"{type(error).__name__}: {error}"[:2000],
        lease_owner="",
        lease_until=None,
    )


def dispatch_after_commit(wire: Wire) -> None:
    """Runs after the producer's commit. Never raises: a failure leaves the row to the relay.

    The request's wait is bounded: the request path's producer (short
    timeouts), through the broker's fail-fast gate (eventbus/protection/failfast.py), so
    that after a failure the following requests do not ask for a while. A
    send that timed out may still have reached the broker (its reply lost):
    the row stays pending all the same, the relay sends it again, and the
    consumers' ledger skips the duplicate. Never a loss, at worst a duplicate.
    """
    event_id = str(wire["id"])
    try:
        with failfast.BROKER.attempt():
            outcomes = send_many([wire], request_path=True)
    except (DispatchError, failfast.Unavailable) as exc:
        log.warning("event %s (%s) left pending for the relay: %s", event_id, wire["type"], exc)
        try:
            record_failure([event_id], exc.cause if isinstance(exc, DispatchError) else exc)
        except Exception:
            log.exception("could not record the dispatch failure of event %s", event_id)
        return
    batch_seconds = settings.EVENTBUS_MARK_BATCH_SECONDS
    if batch_seconds > 0 and marks.can_wait(outcomes):
        # Sent: the process's marker writes the row's mark with others, off the request (eventbus/fastpath/marks.py).
        MARKER.defer(outcomes, batch_seconds)
        return
    try:
        mark_dispatched(outcomes, request_path=True)
    except Exception:
        # Sent, but not marked: the relay will send it again and the ledger
        # will skip the duplicates. The request must not fail for it.
        log.exception("event %s sent but not marked dispatched", event_id)


MARKER = marks.Marker(mark_dispatched)
"""This process's dispatched marks gathered off the request (EVENTBUS_MARK_BATCH_SECONDS > 0)."""
MARKER.flush_on_exit()
