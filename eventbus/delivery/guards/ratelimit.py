"""Rate limit guard: a subscriber with a limiter takes a token before its effect, or waits for one.

The token is taken in the round trip before the effect, before the ledger is
asked whether the event is done: a delivery that then turns out to be a
duplicate, or finds the effect lock taken, has spent a token without calling
the provider. The limit errs towards fewer calls, never more, and those cases
are rare; asking for the token after the ledger cost every email a round trip
of its own. A delivery without a token waits until the limiter says one will
exist, spread over up to twice that (many wait for the same moment), using up
no retry. Not best effort: when Redis cannot be reached the delivery is retried.
"""

from __future__ import annotations

import random

from eventbus.delivery.guards import Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, wait
from eventbus.fastpath.bookkeeping import Reply, RoundTrip
from eventbus.observability import counters


class RateLimit(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        asked: dict[Delivery, Reply] = {}
        for delivery in batch.deliveries:
            if delivery.limiter is not None:
                script, keys, args = delivery.limiter.acquire_call()
                asked[delivery] = round_trip.script(script, keys, args, required=True)

        def check(going: list[Delivery]) -> list[Verdict]:
            return [_verdict(delivery, asked.get(delivery)) for delivery in going]

        return check


def _verdict(delivery: Delivery, reply: Reply | None) -> Verdict:
    if reply is None or delivery.limiter is None:
        return GO
    token_wait = int(reply.first[0]) / 1_000_000
    if token_wait <= 0:
        return GO
    # Many tasks wait for the same moment; spread them so that
    # they do not all come back for the one free grant at once.
    return wait(token_wait * random.uniform(1.0, 2.0), f"rate limit {delivery.limiter.name}", counters.RATE_LIMIT_WAITS)


GUARD = RateLimit()
