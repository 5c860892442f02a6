"""Recording events for analytics."""

from __future__ import annotations

import dataclasses
from typing import Any

from analytics.models import AnalyticsEvent
from eventbus import Envelope
from eventbus.doors import Insert


def _columns(event: Envelope) -> dict[str, Any]:
    payload = dataclasses.asdict(event.payload)
    return {
        "event_id": event.id,
        "type": event.type,
        "user_id": payload.pop("user_id", None),
        "occurred_at": event.occurred_at,
        "properties": {**payload, "aggregate": event.aggregate, "sequence": event.sequence},
    }


#: The rows' INSERT, compiled once per database (eventbus/fastpath/inserts.py): a batch of one is most
#: of what a busy pipeline sends the analytics subscriber, and the ORM's bulk_create cost more
#: than the database's work for it.
_ROWS = Insert(AnalyticsEvent)


def record(event: Envelope) -> AnalyticsEvent:
    row = AnalyticsEvent(**_columns(event))
    row.save()
    return row


def record_many(events: list[Envelope]) -> None:
    """One row per event, in one INSERT (a unique event id refuses a second row for any of them)."""
    _ROWS.rows([_columns(event) for event in events])
