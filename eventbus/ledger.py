"""The processed-event ledger: claim (event, subscriber) once, inside the effect's transaction."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from eventbus.envelope import Envelope
from eventbus.models import ProcessedEvent


def claim(event: Envelope, subscriber: str, task_id: str = "", worker: str = "") -> int | None:
    """Record that ``subscriber`` handles ``event``; returns the entry's id, or None when it already has.

    Call it inside the transaction that holds the effect: if the effect fails,
    the claim rolls back with it. A concurrent duplicate waits on the unique
    index until this transaction ends, then sees the row and backs off.
    """
    try:
        with transaction.atomic():
            entry = ProcessedEvent.objects.create(
                event_id=event.id,
                subscriber=subscriber,
                event_type=event.type,
                aggregate=event.aggregate,
                sequence=event.sequence,
                task_id=task_id or "",
                worker=worker or "",
            )
    except IntegrityError:
        return None
    return int(entry.pk)


def finish(entry_id: int, runtime_ms: float) -> None:
    """Note how long the effect took, in the same transaction as the claim."""
    ProcessedEvent.objects.filter(pk=entry_id).update(runtime_ms=runtime_ms)


def claim_many(events: list[tuple[Envelope, str]], subscriber: str, worker: str = "") -> None:
    """``claim`` for many ``(event, task id)`` at once, in one INSERT; raises IntegrityError if any was claimed.

    Call it inside the transaction that holds the effects, after
    ``processed_ids`` found none of them: a concurrent duplicate makes the
    whole transaction fail, and its caller handles the events one by one.
    """
    ProcessedEvent.objects.bulk_create(
        [
            ProcessedEvent(
                event_id=event.id,
                subscriber=subscriber,
                event_type=event.type,
                aggregate=event.aggregate,
                sequence=event.sequence,
                task_id=task_id,
                worker=worker,
            )
            for event, task_id in events
        ]
    )


def finish_many(event_ids: list[object], subscriber: str, runtime_ms: float) -> None:
    """``finish`` for a batch: each entry gets the batch's run time per event."""
    ProcessedEvent.objects.filter(subscriber=subscriber, event_id__in=event_ids).update(runtime_ms=runtime_ms)


def processed_ids(event_ids: list[object], subscriber: str) -> set[object]:
    """Of ``event_ids``, those the subscriber has handled (``has_processed`` for many, in one query)."""
    if not event_ids:
        return set()
    return set(
        ProcessedEvent.objects.filter(subscriber=subscriber, event_id__in=event_ids).values_list("event_id", flat=True)
    )


def has_processed(event_id: object, subscriber: str) -> bool:
    """True once the subscriber handled the event (or dispatch shed it for that subscriber)."""
    return ProcessedEvent.objects.filter(event_id=event_id, subscriber=subscriber).exists()
