"""Circuit breaker guard: while a provider's breaker is open its subscribers wait instead of calling it.

The breaker's state is read in the round trip before the effect. Closed (the
common case), the delivery goes on; open or half-open, the breaker's own
check decides (eventbus/protection/breaker.py: wait, or go ahead as the one
probe), a round trip of its own. This guard comes after the rate limit's: a
probe that then waited for a token would hold the probe slot for nothing.
After the effect, a success closes the breaker (in the round trip after the
effect) and a transient failure counts against it (once that round trip was
sent; its error, if Redis is out of reach, fails the delivery as transient),
unless the database failed rather than the provider.
"""

from __future__ import annotations

from functools import partial

import redis
from django.db import InterfaceError, OperationalError

from eventbus.delivery.guards import AfterSent, Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Action, Verdict, wait
from eventbus.fastpath.bookkeeping import Reply, RoundTrip
from eventbus.observability import counters
from eventbus.protection.breaker import CLOSED, CircuitBreaker


class Breaker(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        asked: dict[Delivery, Reply] = {}
        for delivery in batch.deliveries:
            if delivery.breaker is not None:
                asked[delivery] = round_trip.queue(partial(_read_state, breaker=delivery.breaker), required=True)

        def check(going: list[Delivery]) -> list[Verdict]:
            return [_verdict(delivery.breaker, asked.get(delivery)) for delivery in going]

        return check

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        breakers = [delivery.breaker for delivery in batch.deliveries if delivery.breaker is not None]
        if not breakers:
            return None
        if outcome.goes_on:
            successes = [(breaker, round_trip.script(*breaker.success_call())) for breaker in breakers]
            return partial(_note_successes, successes)
        if outcome.action is Action.FAIL and outcome.transient and not _database_failed(outcome.error):
            return partial(_record_failures, breakers)
        return None


def _database_failed(error: BaseException | None) -> bool:
    """Whether the failure was the database's (away, restarting), directly or as the ledger entry not
    written after the effect: it says nothing of the provider, so it must not open the provider's breaker
    and hold every delivery to it back once the database is back."""
    return isinstance(error, DATABASE_UNAVAILABLE) or isinstance(
        getattr(error, "__cause__", None), DATABASE_UNAVAILABLE
    )


DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


def _read_state(pipe: redis.client.Pipeline, breaker: CircuitBreaker) -> None:
    pipe.hget(breaker.redis_key, "state")


def _verdict(breaker: CircuitBreaker | None, reply: Reply | None) -> Verdict:
    if breaker is None or reply is None or reply.first in (None, CLOSED):
        return GO
    # Open or half-open: its own check decides, and may make this delivery the probe.
    wait_seconds = breaker.before_call()
    if wait_seconds is None:
        return GO
    return wait(wait_seconds, f"circuit breaker {breaker.name} is open", counters.BREAKER_WAITS)


def _note_successes(successes: list[tuple[CircuitBreaker, Reply]]) -> None:
    for breaker, reply in successes:
        if reply.received:
            breaker.note_success(reply.first)


def _record_failures(breakers: list[CircuitBreaker]) -> None:
    for breaker in breakers:
        breaker.record_failure()


GUARD = Breaker()
