"""Recording events for analytics."""

from __future__ import annotations

import dataclasses

from analytics.models import AnalyticsEvent
from eventbus import Envelope


def record(event: Envelope) -> AnalyticsEvent:
    payload = dataclasses.asdict(event.payload)
    return AnalyticsEvent.objects.create(
        event_id=event.id,
        type=event.type,
        user_id=payload.pop("user_id", None),
        occurred_at=event.occurred_at,
        properties={**payload, "aggregate": event.aggregate, "sequence": event.sequence},
    )
