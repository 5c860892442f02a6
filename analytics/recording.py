"""Recording events for analytics."""

from __future__ import annotations

import dataclasses

from analytics.models import AnalyticsEvent
from eventbus import Envelope


def _row(event: Envelope) -> AnalyticsEvent:
    payload = dataclasses.asdict(event.payload)
    return AnalyticsEvent(
        event_id=event.id,
        type=event.type,
        user_id=payload.pop("user_id", None),
        occurred_at=event.occurred_at,
        properties={**payload, "aggregate": event.aggregate, "sequence": event.sequence},
    )


def record(event: Envelope) -> AnalyticsEvent:
    row = _row(event)
    row.save()
    return row


def record_many(events: list[Envelope]) -> None:
    """One row per event, in one INSERT (a unique event id refuses a second row for any of them)."""
    AnalyticsEvent.objects.bulk_create([_row(event) for event in events])
