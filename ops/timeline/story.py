"""The story of one event: its envelope, its outbox state, each subscriber's steps, its neighbours."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from eventbus import ops_api
from eventbus.models import OutboxEvent, ProcessedEvent
from ops.timeline.links import TaskRef, as_uuid, search_url
from ops.timeline.records import Records
from ops.timeline.steps import TimelineStep, steps_for

# How many of an aggregate's events the page lists on each side of the one shown.
NEIGHBOURS = 25


@dataclass(frozen=True)
class SubscriberStory:
    name: str
    label: str
    queue: str
    registered: bool
    """False for a subscriber the records name but the running code no longer declares."""
    state: str
    """The state the sign-up status page shows (``eventbus.observability.status``).

    Pending, deferred, queued, done, shed...
    """
    state_text: str
    steps: tuple[TimelineStep, ...]
    """In the order they happened; steps without a time keep their place in the records."""
    tasks: tuple[TaskRef, ...]


@dataclass(frozen=True)
class OutboxState:
    status: str
    created_at: datetime
    dispatched_at: datetime | None
    dispatch_attempts: int
    last_error: str
    deferred_subscribers: tuple[str, ...]

    @property
    def description(self) -> str:
        if self.status == OutboxEvent.Status.DISPATCHED:
            return "handed to the broker for every subscriber"
        if self.status == OutboxEvent.Status.DEFERRED:
            return f"held for {', '.join(self.deferred_subscribers)} until their queue drains"
        return "in the outbox, not yet handed to the broker; the relay sends it"


@dataclass(frozen=True)
class EventRef:
    event_id: uuid.UUID
    type: str
    sequence: int
    occurred_at: datetime
    status: str


@dataclass(frozen=True)
class EventTimeline:
    """Everything the records say about one event, for one page."""

    event_id: uuid.UUID
    type: str
    version: int
    aggregate: str
    sequence: int
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None
    envelope_json: str
    outbox: OutboxState
    subscribers: tuple[SubscriberStory, ...]
    previous: EventRef | None
    next: EventRef | None
    aggregate_events: tuple[EventRef, ...]
    """The aggregate's events around this one (at most ``NEIGHBOURS`` each side), by sequence."""

    @property
    def request_search_url(self) -> str:
        return search_url(self.correlation_id)

    @property
    def aggregate_search_url(self) -> str:
        return search_url(self.aggregate)


def build(event_id: uuid.UUID | str) -> EventTimeline | None:
    """The timeline of ``event_id``, or None when the outbox has no such event.

    A bounded number of queries, whatever the number of steps.
    """
    pk = event_id if isinstance(event_id, uuid.UUID) else as_uuid(str(event_id))
    event = OutboxEvent.objects.filter(pk=pk).first() if pk is not None else None
    if event is None:
        return None
    records = Records.load(event)
    states = _states(event)
    names = [s.name for s in ops_api.subscriptions_for(event.type)]
    names += sorted(records.subscribers() - set(names))
    subscribers = tuple(_subscriber_story(event, name, records, states) for name in names)
    neighbours = _aggregate_events(event)
    return EventTimeline(
        event_id=event.id,
        type=event.type,
        version=event.version,
        aggregate=event.aggregate,
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        envelope_json=json.dumps(event.to_wire(), indent=2),
        outbox=OutboxState(
            status=event.status,
            created_at=event.created_at,
            dispatched_at=event.dispatched_at,
            dispatch_attempts=event.dispatch_attempts,
            last_error=event.last_error,
            deferred_subscribers=tuple(event.deferred_subscribers or ()),
        ),
        subscribers=subscribers,
        previous=next((e for e in reversed(neighbours) if e.sequence < event.sequence), None),
        next=next((e for e in neighbours if e.sequence > event.sequence), None),
        aggregate_events=tuple(neighbours),
    )


def _states(event: OutboxEvent) -> dict[str, ops_api.DeliveryStatus]:
    for status in ops_api.event_statuses_for(event.aggregate):
        if status.event_id == str(event.id):
            return {d.subscriber: d for d in status.deliveries}
    return {}


def _subscriber_story(
    event: OutboxEvent, name: str, records: Records, states: dict[str, ops_api.DeliveryStatus]
) -> SubscriberStory:
    subscription = ops_api.find_subscription(name)
    entry = records.ledger.get(name)
    status = states.get(name)
    if status is not None:
        state, state_text = status.state, status.text
    elif entry is not None and entry.outcome == ProcessedEvent.Outcome.SHED:
        state, state_text = "shed", "skipped under load"
    elif entry is not None:
        state, state_text = "done", "done"
    else:
        state, state_text = "unknown", "no longer subscribed"
    steps = steps_for(event, name, records)
    task_ids = [s.task.task_id for s in steps if s.task is not None]
    task_ids += [r.task_id for r in records.results if r.task_name == name]
    tasks = tuple(records.tasks[t] for t in dict.fromkeys(task_ids) if t in records.tasks)
    return SubscriberStory(
        name=name,
        label=subscription.label if subscription else name,
        queue=subscription.queue if subscription else "",
        registered=subscription is not None,
        state=state,
        state_text=state_text,
        steps=steps,
        tasks=tasks,
    )


def _aggregate_events(event: OutboxEvent) -> list[EventRef]:
    same = OutboxEvent.objects.filter(aggregate=event.aggregate)
    fields = ("id", "type", "sequence", "occurred_at", "status")
    before = list(same.filter(sequence__lt=event.sequence).order_by("-sequence").values_list(*fields)[:NEIGHBOURS])
    after = list(same.filter(sequence__gte=event.sequence).order_by("sequence").values_list(*fields)[: NEIGHBOURS + 1])
    return [EventRef(*row) for row in [*reversed(before), *after]]
