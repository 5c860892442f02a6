"""Attempts guard: a delivery that keeps killing its worker is dead-lettered, not run again.

A task whose worker process dies is redelivered by the broker; one that kills
its worker every time would loop forever. Each start of an attempt is counted
in Redis (eventbus/delivery/attempts.py); after ``EVENTBUS_MAX_DELIVERIES``
starts without an orderly end the delivery is dead-lettered as ``worker_lost``
(RabbitMQ's delivery-limit, SQS's maxReceiveCount). The count is best effort:
when the round trip fails, the attempt counts as a first start. Once the
effect happened, the count and the first failure are cleared.
"""

from __future__ import annotations

from functools import partial

from django.conf import settings

from eventbus.deadletters import Kind
from eventbus.delivery import attempts
from eventbus.delivery.guards import AfterSent, Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, dead_letter
from eventbus.fastpath.bookkeeping import Reply, RoundTrip


class Attempts(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        replies = {
            delivery: round_trip.queue(partial(attempts.count_into, task_id=delivery.task_id, retries=delivery.retries))
            for delivery in batch.deliveries
        }

        def check(going: list[Delivery]) -> list[Verdict]:
            return [_verdict(replies[delivery]) for delivery in going]

        return check

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        if outcome.goes_on:
            ended = [(delivery.task_id, delivery.retries) for delivery in batch.deliveries]
            round_trip.queue(partial(attempts.clear_into, attempts=ended))
        return None


def _verdict(reply: Reply) -> Verdict:
    starts = int(reply.first) if reply.received else 1
    if starts <= settings.EVENTBUS_MAX_DELIVERIES:
        return GO
    return dead_letter(
        Kind.WORKER_LOST,
        RuntimeError(
            f"delivered {settings.EVENTBUS_MAX_DELIVERIES} times without finishing: the worker process died each time"
        ),
    )


GUARD = Attempts()
