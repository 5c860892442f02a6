"""Deliveries under way: sent, and neither in the ledger nor among the dead letters yet.

The outbox's "unsettled" rows (``ops.snapshot.ReconcileStatus.unsettled``) are
the events the reconciler has not yet marked settled; it looks at an event
only once it is ``EVENTBUS_REDELIVER_AFTER`` old, so every event of the last
quarter of an hour counts there however quickly its deliveries ended. This
module counts what an operator means by "not done": each (event, subscriber)
the outbox sent to that has no end recorded yet, the same test the reconciler
applies (eventbus/operations/reconcile.py), without settling anything.

Bounded as the ops pages' other figures are: it examines the newest
``SAMPLE`` unsettled events, found on the reconciler's partial index, and
reads their ledger and dead-letter rows by event id (three queries, each of
at most ``SAMPLE`` ids). When more events are unsettled than that, the page
says the count covers the newest ``SAMPLE``.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent

SAMPLE = 1000
"""Unsettled events examined at most, newest first."""


@dataclass(frozen=True)
class UnderWay:
    deliveries: int
    """Deliveries sent with no end recorded yet (no ledger entry, no dead letter), among the examined events."""
    examined: int
    """Events examined: the newest unsettled ones, at most ``sample``."""
    sample: int

    @property
    def complete(self) -> bool:
        """Whether every unsettled event was examined (fewer than the sample were there)."""
        return self.examined < self.sample


def deliveries_under_way(sample: int = SAMPLE) -> UnderWay:
    """Among the newest ``sample`` sent-but-unsettled events, the deliveries that have not ended yet."""
    rows = list(
        OutboxEvent.objects.filter(settled_at__isnull=True, last_sent_at__isnull=False)
        .order_by("-last_sent_at", "-id")
        .values_list("id", "sent_to")[:sample]
    )
    ids = [event_id for event_id, _ in rows]
    ended = set(ProcessedEvent.objects.filter(event_id__in=ids).values_list("event_id", "subscriber"))
    ended |= set(DeadLetter.objects.filter(event_id__in=ids).values_list("event_id", "subscriber"))
    open_deliveries = sum(1 for event_id, sent_to in rows for name in sent_to or () if (event_id, name) not in ended)
    return UnderWay(deliveries=open_deliveries, examined=len(rows), sample=sample)
