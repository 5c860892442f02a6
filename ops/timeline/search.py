"""Finding events: one search box that tries every way an operator may know an event."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet
from django_celery_results.models import TaskResult

from eventbus import ops_api
from eventbus.models import DeadLetter, DeadLetterReplay, DeliveryStep, OutboxEvent, ProcessedEvent
from ops.timeline.links import as_uuid
from signups.events import aggregate_of
from signups.services import users_with_address

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
Step = DeliveryStep.Step


@dataclass(frozen=True)
class SearchResult:
    query: str
    matched: tuple[str, ...]
    """How the query matched, in words (``event id``, ``email a@b.c: user 42``...); empty when nothing did."""
    events: QuerySet[OutboxEvent]
    """Newest first; every event when the query is blank."""


def search(query: str) -> SearchResult:
    """Events whose id, request id or aggregate is ``query``, whose user has that email, or that a task carried.

    One box, every interpretation tried: an event id; a user's email (that
    user's aggregate ``user:<id>``); a request id (the correlation id); an
    aggregate (``user:42``); a task id found in the ledger, the delivery
    steps, the dead letters, their replays, or a stored TaskResult whose
    arguments name an event.
    """
    text = query.strip()
    everything = OutboxEvent.objects.order_by("-occurred_at", "-sequence")
    if not text:
        return SearchResult(text, (), everything)
    ids: set[uuid.UUID] = set()
    aggregates: set[str] = set()
    matched: list[str] = []

    event_id = as_uuid(text)
    if event_id is not None and OutboxEvent.objects.filter(pk=event_id).exists():
        ids.add(event_id)
        matched.append("event id")
    if "@" in text:
        for user_id in users_with_address(text).values_list("pk", flat=True):
            aggregates.add(aggregate_of(user_id))
            matched.append(f"email {text}: user {user_id}")
    if OutboxEvent.objects.filter(correlation_id=text).exists():
        matched.append("request id")
    if OutboxEvent.objects.filter(aggregate=text).exists():
        aggregates.add(text)
        matched.append("aggregate")
    for where, event_ids in _events_of_task(text):
        if event_ids:
            ids.update(event_ids)
            matched.append(f"task id ({where})")

    if not matched:
        return SearchResult(text, (), OutboxEvent.objects.none())
    found = everything.filter(Q(pk__in=ids) | Q(aggregate__in=aggregates) | Q(correlation_id=text))
    return SearchResult(text, tuple(matched), found)


def _events_of_task(task_id: str) -> list[tuple[str, set[uuid.UUID]]]:
    """Per record that keeps task ids, the events a task with this id carried."""
    found = [
        ("ledger", set(ProcessedEvent.objects.filter(task_id=task_id).values_list("event_id", flat=True))),
        ("delivery steps", set(DeliveryStep.objects.filter(task_id=task_id).values_list("event_id", flat=True))),
        (
            "dead letters",
            set(DeadLetter.objects.filter(task_id=task_id, event_id__isnull=False).values_list("event_id", flat=True)),
        ),
        (
            "replays",
            set(DeadLetterReplay.objects.filter(task_id=task_id).values_list("dead_letter__event_id", flat=True))
            - {None},
        ),
    ]
    named: set[uuid.UUID] = set()
    for args in TaskResult.objects.filter(task_id=task_id).values_list("task_args", flat=True):
        named.update(uuid.UUID(m) for m in _UUID.findall(args or ""))
    stored = set(OutboxEvent.objects.filter(pk__in=named).values_list("pk", flat=True)) if named else set()
    found.append(("stored task result", stored))
    return found


@dataclass(frozen=True)
class EventRow:
    """One line of the search results."""

    event_id: uuid.UUID
    type: str
    aggregate: str
    sequence: int
    occurred_at: datetime
    status: str
    correlation_id: str
    handled: int
    """Subscribers whose ledger holds the event (processed or shed)."""
    subscribers: int
    """Subscribers its type has now."""
    dead_lettered: int
    """Subscribers with a dead-lettered step for it."""


def rows(events: Iterable[OutboxEvent]) -> list[EventRow]:
    """Search-result lines for one page of events (three queries, whatever the page size)."""
    page = list(events)
    ids = [e.id for e in page]
    handled = dict(
        ProcessedEvent.objects.filter(event_id__in=ids)
        .values("event_id")
        .annotate(n=Count("id"))
        .values_list("event_id", "n")
    )
    dead = dict(
        DeliveryStep.objects.filter(event_id__in=ids, step=Step.DEAD_LETTERED)
        .values("event_id")
        .annotate(n=Count("subscriber", distinct=True))
        .values_list("event_id", "n")
    )
    return [
        EventRow(
            event_id=e.id,
            type=e.type,
            aggregate=e.aggregate,
            sequence=e.sequence,
            occurred_at=e.occurred_at,
            status=e.status,
            correlation_id=e.correlation_id,
            handled=handled.get(e.id, 0),
            subscribers=len(ops_api.subscriptions_for(e.type)),
            dead_lettered=dead.get(e.id, 0),
        )
        for e in page
    ]
