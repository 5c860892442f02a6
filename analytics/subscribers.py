"""Consumers that record analytics."""

from __future__ import annotations

from analytics.recording import record_many
from eventbus import Envelope, subscriber
from project import queues


@subscriber(
    "user.signed_up",
    "user.email_verified",
    name="analytics.record_event",
    queue=queues.ANALYTICS,
    label="analytics",
    done_label="recorded",
    critical=False,
    # The funnel must not count a verification before its sign-up.
    ordered=True,
    # Rows are cheap and many: a transaction per event would be the cost of
    # recording them. Up to 200 events per INSERT (eventbus/delivery/batch.py).
    batch=200,
)
def record_events(events: list[Envelope]) -> None:
    """One analytics row per event; the ledger and a unique event id keep it to one."""
    record_many(events)
