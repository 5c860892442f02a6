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
