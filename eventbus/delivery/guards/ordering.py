"""Ordering guard: an ordered subscriber ignores a stale event and defers one whose predecessor it has not handled.

What is stale or in a gap is eventbus/delivery/ordering.py's to say. A stale
event is skipped and counted; one in a gap waits
``EVENTBUS_ORDERING_RECHECK`` seconds (using up no retry), and is
dead-lettered once it has waited more than ``EVENTBUS_ORDERING_GAP_TIMEOUT``
since it occurred. In a batch, an event whose aggregate has another event in
the same batch, or that is not in order, is delivered on its own (``ALONE``):
each must see its predecessor applied.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from django.conf import settings

from eventbus.contract.envelope import Envelope
from eventbus.deadletters import Kind
from eventbus.delivery import ordering
from eventbus.delivery.guards import Batch, Check, Delivery, Guard, all_go
from eventbus.delivery.verdict import ALONE, GO, Verdict, dead_letter, skip, wait
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.observability import counters, timeline

STALE = skip(
    timeline.Step.STALE,
    counters.STALE,
    "a later event of the aggregate was applied",
    "is stale (a later one was applied); ignored",
)


class Ordering(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        subscription = batch.subscription
        if not subscription.ordered:
            return all_go

        def check(going: list[Delivery]) -> list[Verdict]:
            if not batch.bulk:
                return [_verdict(d.event, ordering.check(d.event, subscription)) for d in going]
            per_aggregate = Counter(delivery.event.aggregate for delivery in going)
            alone = [delivery.event for delivery in going if per_aggregate[delivery.event.aggregate] == 1]
            in_order = ordering.in_order_many(alone, subscription, batch.ledger_rows)
            return [GO if delivery.event.id in in_order else ALONE for delivery in going]

        return check


def _verdict(event: Envelope, order: ordering.Order) -> Verdict:
    if order is ordering.Order.STALE:
        return STALE
    if order is ordering.Order.GAP:
        waited = (datetime.now(UTC) - event.occurred_at).total_seconds()
        if waited > settings.EVENTBUS_ORDERING_GAP_TIMEOUT:
            return dead_letter(
                Kind.PERMANENT,
                RuntimeError(
                    f"an earlier event of {event.aggregate} was still not handled after {waited:.0f}s "
                    f"(EVENTBUS_ORDERING_GAP_TIMEOUT={settings.EVENTBUS_ORDERING_GAP_TIMEOUT:g}s)"
                ),
            )
        reason = f"waiting for an earlier event of {event.aggregate}"
        return wait(settings.EVENTBUS_ORDERING_RECHECK, reason, counters.ORDER_WAITS)
    return GO


GUARD = Ordering()
