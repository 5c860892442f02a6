"""What has happened to an aggregate's events, read from the bus's own records.

The sign-up status page shows this: it survives restarts because it reads the
outbox and the ledger, not a worker's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus import registry
from eventbus.models import OutboxEvent, ProcessedEvent


@dataclass(frozen=True)
class DeliveryStatus:
    subscriber: str
    label: str
    state: str
    """``pending`` (in the outbox), ``queued`` (on the broker) or ``done``."""
    text: str
    """What a person reads, e.g. ``queued`` or ``sent``."""


@dataclass(frozen=True)
class EventStatus:
    event_id: str
    type: str
    sequence: int
    occurred_at: str
    deliveries: list[DeliveryStatus]

    @property
    def complete(self) -> bool:
        return all(d.state == "done" for d in self.deliveries)


def for_aggregate(aggregate: str) -> list[EventStatus]:
    events = list(OutboxEvent.objects.filter(aggregate=aggregate).order_by("sequence"))
    done = set(ProcessedEvent.objects.filter(event_id__in=[e.id for e in events]).values_list("event_id", "subscriber"))
    statuses = []
    for event in events:
        deliveries = []
        for subscription in registry.subscriptions_for(event.type):
            if (event.id, subscription.name) in done:
                state, text = "done", subscription.done_label
            elif event.status == OutboxEvent.Status.PENDING:
                state, text = "pending", "waiting to be queued"
            else:
                state, text = "queued", "queued"
            deliveries.append(DeliveryStatus(subscription.name, subscription.label, state, text))
        statuses.append(
            EventStatus(
                event_id=str(event.id),
                type=event.type,
                sequence=event.sequence,
                occurred_at=event.occurred_at.isoformat(),
                deliveries=deliveries,
            )
        )
    return statuses
