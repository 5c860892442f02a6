"""Ordering guard: an ordered subscriber ignores a stale event and defers one whose predecessor it has not handled.

There is no global order. Each event carries its aggregate's ``sequence``. For
an ``ordered`` subscriber the pipeline asks, before handling an event:

- **stale**: has this subscriber already handled a later event of the same
  aggregate? Then this one is out of date: it is skipped, and counted.
- **gap**: is there an earlier event of the same aggregate, of a type this
  subscriber consumes, that it has not handled yet? Then this one waits
  ``EVENTBUS_ORDERING_RECHECK`` seconds (rescheduled, using up no retry)
  until the predecessor is handled, or is dead-lettered once it has waited
  more than ``EVENTBUS_ORDERING_GAP_TIMEOUT`` since it occurred.

Predecessors are looked up in the outbox, so this needs producers and
consumers to share the database (as they do here); a shed predecessor counts
as handled. In a batch, an event whose aggregate has another event in the
same batch, or that is not in order, is delivered on its own (``ALONE``):
each must see its predecessor applied.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from enum import StrEnum

from django.conf import settings

from eventbus.contract.envelope import Envelope
from eventbus.contract.registry import Subscription
from eventbus.deadletters import Kind
from eventbus.delivery import ledger
from eventbus.delivery.guards import Batch, Check, Delivery, Guard, all_go
from eventbus.delivery.verdict import ALONE, GO, Verdict, dead_letter, skip, wait
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import counters, timeline


class Order(StrEnum):
    IN_ORDER = "in_order"
    STALE = "stale"
    GAP = "gap"


def order_of(event: Envelope, subscription: Subscription) -> Order:
    """Where ``event`` stands for ``subscription``: in order, stale, or in a gap (one query or two)."""
    handled = ProcessedEvent.objects.filter(subscriber=subscription.name, aggregate=event.aggregate)
    if handled.filter(sequence__gt=event.sequence).exists():
        return Order.STALE
    predecessor = (
        OutboxEvent.objects.filter(
            aggregate=event.aggregate, sequence__lt=event.sequence, type__in=subscription.event_types
        )
        .order_by("-sequence")
        .values_list("id", flat=True)
        .first()
    )
    if predecessor is not None and not handled.filter(event_id=predecessor).exists():
        return Order.GAP
    return Order.IN_ORDER


def in_order_many(
    events: list[Envelope], subscription: Subscription, handled: list[tuple[object, str, int]] | None = None
) -> set[object]:
    """The ids of ``events`` that ``order_of`` would find in order, in at most three queries for all of them.

    Meant for events of distinct aggregates (a batch); for several events of
    one aggregate, call ``order_of`` on each as the earlier ones are applied.
    ``handled``: the rows ``ledger.history`` read for these events, if the caller
    has them (then no ledger query is made here). An aggregate's first event
    (sequence 1: eventbus/outbox/sequences.py numbers from 1) has no predecessor to
    look up in the outbox.
    """
    if not events:
        return set()
    if handled is None:
        handled = ledger.history(events, subscription)
    aggregates = {event.aggregate for event in events}
    latest: dict[str, int] = {}
    done: set[object] = set()
    for event_id, aggregate, sequence in handled:
        if aggregate in aggregates:
            latest[aggregate] = max(latest.get(aggregate, 0), sequence)
            done.add(event_id)
    later = {event.aggregate for event in events if event.sequence > 1}
    published: dict[str, list[tuple[int, object]]] = defaultdict(list)
    if later:
        for aggregate, sequence, event_id in OutboxEvent.objects.filter(
            aggregate__in=later, type__in=subscription.event_types
        ).values_list("aggregate", "sequence", "id"):
            published[aggregate].append((sequence, event_id))
    predecessors: dict[object, object] = {}
    for event in events:
        earlier = [pair for pair in published[event.aggregate] if pair[0] < event.sequence]
        if earlier:
            predecessors[event.id] = max(earlier, key=lambda pair: pair[0])[1]
    return {
        event.id
        for event in events
        if latest.get(event.aggregate, 0) <= event.sequence
        and (event.id not in predecessors or predecessors[event.id] in done)
    }


STALE = skip(
    timeline.Step.STALE,
    counters.STALE,
    "a later event of the aggregate was applied",
    "is stale (a later one was applied); ignored",
)


class Ordering(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        subscription = batch.subscription
        if not subscription.ordered:
            return all_go

        def check(going: list[Delivery]) -> list[Verdict]:
            if not batch.bulk:
                return [_verdict(d.event, order_of(d.event, subscription)) for d in going]
            per_aggregate = Counter(delivery.event.aggregate for delivery in going)
            alone = [delivery.event for delivery in going if per_aggregate[delivery.event.aggregate] == 1]
            in_order = in_order_many(alone, subscription, batch.ledger_rows)
            return [GO if delivery.event.id in in_order else ALONE for delivery in going]

        return check


def _verdict(event: Envelope, order: Order) -> Verdict:
    if order is Order.STALE:
        return STALE
    if order is Order.GAP:
        waited = (datetime.now(UTC) - event.occurred_at).total_seconds()
        if waited > settings.EVENTBUS_ORDERING_GAP_TIMEOUT:
            return dead_letter(
                Kind.PERMANENT,
                RuntimeError(
                    f"an earlier event of {event.aggregate} was still not handled after {waited:.0f}s "
                    f"(EVENTBUS_ORDERING_GAP_TIMEOUT={settings.EVENTBUS_ORDERING_GAP_TIMEOUT:g}s)"
                ),
            )
        reason = f"waiting for an earlier event of {event.aggregate}"
        return wait(settings.EVENTBUS_ORDERING_RECHECK, reason, counters.ORDER_WAITS)
    return GO


GUARD = Ordering()
