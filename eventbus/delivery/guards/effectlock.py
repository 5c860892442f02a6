"""Effect lock guard: two deliveries of one event never send an effect outside the database at once.

For a handler whose effect is outside the database (``transactional=False``:
an email), the lock (eventbus/delivery/effectlock.py) is taken in the round
trip before the effect, for the handler's time limit; a delivery that finds
it taken waits a second and comes back (it then finds the ledger entry). The
lock is given back in the round trip after the delivery, whatever its end,
if it is still this delivery's. Taking it is not best effort: when Redis
cannot be reached the delivery is retried.
"""

from __future__ import annotations

import uuid
from functools import partial

from eventbus.delivery import effectlock
from eventbus.delivery.guards import AfterSent, Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, wait
from eventbus.fastpath.bookkeeping import Reply, RoundTrip
from eventbus.observability import counters

# Seconds before a delivery that found the lock taken comes back.
RECHECK = 1.0


class EffectLock(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        asked: dict[Delivery, tuple[str, Reply]] = {}
        for delivery in batch.deliveries:
            subscription = delivery.subscription
            if subscription.transactional:
                continue  # its effect commits with its ledger entry: the entry's unique index keeps duplicates out
            token = uuid.uuid4().hex
            take = partial(
                effectlock.acquire_into,
                subscriber=subscription.name,
                event_id=delivery.event.id,
                seconds=subscription.time_limit or 60.0,
                token=token,
            )
            asked[delivery] = (token, round_trip.queue(take, required=True))

        def check(going: list[Delivery]) -> list[Verdict]:
            verdicts = []
            for delivery in going:
                if delivery not in asked:
                    verdicts.append(GO)
                    continue
                token, reply = asked[delivery]
                if reply.first:
                    delivery.lock_token = token
                    verdicts.append(GO)
                else:
                    verdicts.append(wait(RECHECK, "another delivery of this event is under way", counters.EFFECT_WAITS))
            return verdicts

        return check

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        for delivery in batch.deliveries:
            if delivery.lock_token is not None:
                lock = effectlock.lock_key(delivery.subscription.name, delivery.event.id)
                round_trip.script(effectlock.release_script(), [lock], [delivery.lock_token])
                delivery.lock_token = None
        return None


GUARD = EffectLock()
