"""Duplicate guard: an event the ledger says this subscriber handled is skipped, and counted.

One delivery asks the ledger with one prepared ``SELECT 1`` (eventbus/delivery/ledger.py);
a batch asks once for all of its events (for an ordered subscriber, with the
query that also reads the ledger rows the ordering guard needs). The effect
claims its ledger entry again (eventbus/delivery/pipeline.py): a duplicate
delivered at the same moment is caught there.
"""

from __future__ import annotations

from eventbus.delivery import ledger
from eventbus.delivery.guards import Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, skip
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.observability import counters, timeline

DUPLICATE = skip(
    timeline.Step.DUPLICATE, counters.DUPLICATES, "the ledger says it is done", "already processed; skipped"
)


class Duplicate(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        subscription = batch.subscription

        def check(going: list[Delivery]) -> list[Verdict]:
            if not batch.bulk:
                return [DUPLICATE if ledger.has_processed(d.event.id, subscription.name) else GO for d in going]
            events = [delivery.event for delivery in going]
            if subscription.ordered:
                batch.ledger_rows = ledger.history(events, subscription)
                done = {event_id for event_id, _, _ in batch.ledger_rows}
            else:
                done = ledger.processed_ids([event.id for event in events], subscription.name)
            return [DUPLICATE if delivery.event.id in done else GO for delivery in going]

        return check


GUARD = Duplicate()
