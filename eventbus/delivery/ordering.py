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
from functools import lru_cache
from typing import Any

from django.db import connections

from eventbus.contract.envelope import Envelope
from eventbus.contract.registry import Subscription
from eventbus.models import OutboxEvent, ProcessedEvent


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


def history(events: list[Envelope], subscription: Subscription) -> list[tuple[object, str, int]]:
    """The subscriber's ledger rows ``(event id, aggregate, sequence)`` of these events' aggregates
    and of the events themselves, in one query: what ``in_order_many`` and the ledger check of a
    batch both need (eventbus/delivery/batch.py).

    The ORM's query (``subscriber = %s AND (aggregate IN (...) OR event_id IN (...))``),
    its SQL made once per database and batch shape: compiling the queryset cost a batch of
    one about ten times what the database took to answer it (figure 1, docs/benchmarks.md).
    """
    if not events:
        return []
    aggregates = list({event.aggregate: None for event in events})
    connection = connections["default"]
    params: list[Any] = [subscription.name, *aggregates]
    params += [_EVENT_ID.get_db_prep_value(event.id, connection) for event in events]
    with connection.cursor() as cursor:
        cursor.execute(_history_sql(connection.alias, len(aggregates), len(events)), params)
        rows = cursor.fetchall()
    return [(_EVENT_ID.to_python(event_id), aggregate, int(sequence)) for event_id, aggregate, sequence in rows]


_EVENT_ID = ProcessedEvent._meta.get_field("event_id")


@lru_cache(maxsize=512)
def _history_sql(alias: str, aggregates: int, ids: int) -> str:
    quote = connections[alias].ops.quote_name
    meta = ProcessedEvent._meta
    event_id, aggregate, sequence, subscriber = (
        quote(meta.get_field(name).column) for name in ("event_id", "aggregate", "sequence", "subscriber")
    )
    return (
        f"SELECT {event_id}, {aggregate}, {sequence} FROM {quote(meta.db_table)} "
        f"WHERE {subscriber} = %s AND ({aggregate} IN ({', '.join(['%s'] * aggregates)}) "
        f"OR {event_id} IN ({', '.join(['%s'] * ids)}))"
    )


def in_order_many(
    events: list[Envelope], subscription: Subscription, handled: list[tuple[object, str, int]] | None = None
) -> set[object]:
    """The ids of ``events`` that ``check`` would find in order, in at most three queries for all of them.

    Meant for events of distinct aggregates (a batch); for several events of
    one aggregate, call ``check`` on each as the earlier ones are applied.
    ``handled``: the rows ``history`` read for these events, if the caller
    has them (then no ledger query is made here). An aggregate's first event
    (sequence 1: eventbus/outbox/sequences.py numbers from 1) has no predecessor to
    look up in the outbox.
    """
    if not events:
        return set()
    if handled is None:
        handled = history(events, subscription)
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
