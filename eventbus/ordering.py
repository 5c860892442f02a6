"""Ordering per aggregate, for subscribers that need it.

There is no global order. Each event carries its aggregate's ``sequence``. For
an ``ordered`` subscriber the consumer asks, before handling an event:

- **stale**: has this subscriber already handled a later event of the same
  aggregate? Then this one is out of date: it is ignored, and counted.
- **gap**: is there an earlier event of the same aggregate, of a type this
  subscriber consumes, that it has not handled yet? Then this one waits
  (rescheduled, not a failed attempt) until the predecessor is handled, or is
  dead-lettered when the gap outlives ``EVENTBUS_ORDERING_GAP_TIMEOUT``.

Predecessors are looked up in the outbox, so this needs producers and
consumers to share the database (as they do here); a shed predecessor counts
as handled.
"""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum

from eventbus.envelope import Envelope
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.registry import Subscription


class Order(StrEnum):
    IN_ORDER = "in_order"
    STALE = "stale"
    GAP = "gap"


def check(event: Envelope, subscription: Subscription) -> Order:
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


def in_order_many(events: list[Envelope], subscription: Subscription) -> set[object]:
    """The ids of ``events`` that ``check`` would find in order, in three queries for all of them.

    Meant for events of distinct aggregates (a batch); for several events of
    one aggregate, call ``check`` on each as the earlier ones are applied.
    """
    if not events:
        return set()
    aggregates = {event.aggregate for event in events}
    handled = ProcessedEvent.objects.filter(subscriber=subscription.name, aggregate__in=aggregates)
    latest: dict[str, int] = {}
    for aggregate, sequence in handled.values_list("aggregate", "sequence"):
        latest[aggregate] = max(latest.get(aggregate, 0), sequence)
    published: dict[str, list[tuple[int, object]]] = defaultdict(list)
    for aggregate, sequence, event_id in OutboxEvent.objects.filter(
        aggregate__in=aggregates, type__in=subscription.event_types
    ).values_list("aggregate", "sequence", "id"):
        published[aggregate].append((sequence, event_id))
    predecessors: dict[object, object] = {}
    for event in events:
        earlier = [pair for pair in published[event.aggregate] if pair[0] < event.sequence]
        if earlier:
            predecessors[event.id] = max(earlier, key=lambda pair: pair[0])[1]
    done = set(handled.filter(event_id__in=set(predecessors.values())).values_list("event_id", flat=True))
    return {
        event.id
        for event in events
        if latest.get(event.aggregate, 0) <= event.sequence
        and (event.id not in predecessors or predecessors[event.id] in done)
    }
