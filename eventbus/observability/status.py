"""What has happened to an aggregate's events, read from the bus's own records.

The sign-up status page shows this, and so does the ops event timeline: it
survives restarts because it reads the outbox, the ledger and the delivery
steps, not a worker's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.contract import registry
from eventbus.models import DeliveryStep, OutboxEvent, ProcessedEvent

Step = DeliveryStep.Step
# The last of these steps says what became of a delivery that the ledger does not hold.
_DECISIVE_STEPS = (Step.RETRIED, Step.WAITING, Step.DEAD_LETTERED, Step.REPLAYED, Step.STALE)


@dataclass(frozen=True)
class DeliveryStatus:
    subscriber: str
    label: str
    state: str
    """``pending`` (in the outbox), ``deferred`` (held: queue full), ``queued`` (on the broker),
    ``retrying`` (failed or rescheduled, tried again later), ``dead_lettered`` (failed for good until
    replayed), ``stale`` (ignored: a later event was applied), ``done``, or ``shed`` (dropped under
    load: a sheddable subscriber)."""
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
        return all(d.state in ("done", "shed", "stale") for d in self.deliveries)


def for_aggregate(aggregate: str) -> list[EventStatus]:
    events = list(OutboxEvent.objects.filter(aggregate=aggregate).order_by("sequence"))
    outcomes = {
        (event_id, subscriber): outcome
        for event_id, subscriber, outcome in ProcessedEvent.objects.filter(
            event_id__in=[e.id for e in events]
        ).values_list("event_id", "subscriber", "outcome")
    }
    last_step = {
        (event_id, subscriber): step
        for event_id, subscriber, step in DeliveryStep.objects.filter(
            event_id__in=[e.id for e in events], step__in=_DECISIVE_STEPS
        )
        .order_by("at", "id")
        .values_list("event_id", "subscriber", "step")
    }
    statuses = []
    for event in events:
        deliveries = []
        for subscription in registry.subscriptions_for(event.type):
            outcome = outcomes.get((event.id, subscription.name))
            if outcome == ProcessedEvent.Outcome.SHED:
                state, text = "shed", "skipped under load"
            elif outcome is not None:
                state, text = "done", subscription.done_label
            elif (step := last_step.get((event.id, subscription.name))) == Step.DEAD_LETTERED:
                state, text = "dead_lettered", "failed; waiting for an operator"
            elif step == Step.STALE:
                state, text = "stale", "not needed: a later change was applied"
            elif step in (Step.RETRIED, Step.WAITING):
                state, text = "retrying", "delayed; trying again"
            elif event.status == OutboxEvent.Status.DEFERRED and subscription.name in event.deferred_subscribers:
                state, text = "deferred", "held until its queue drains"
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
