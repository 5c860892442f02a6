"""Effect lock guard: two deliveries of one event never send an effect outside the database at once.

A handler whose effect is in the database runs inside the transaction that
writes its ledger entry, so a concurrent duplicate waits on the entry's unique
index. A handler that sends an email (``transactional=False``) must not hold a
database transaction open across the network (on SQLite that would be the
whole database's write lock for the length of an SMTP conversation). It runs
outside any transaction instead, and two deliveries of the same event at the
same moment are kept apart by a short lock in Redis per (event, subscriber).

The lock is taken in the round trip before the effect, for the handler's time
limit; a delivery that finds it taken waits a second and comes back (it then
finds the ledger entry). It is given back in the round trip after the
delivery, whatever its end, if it is still this delivery's. It expires after
the time limit, so a worker that died holding it delays a redelivery, never
blocks it. Taking it is not best effort: when Redis cannot be reached the
delivery is retried.
"""

from __future__ import annotations

import uuid
from functools import lru_cache, partial

import redis
from redis.commands.core import Script

from eventbus.delivery import unrecorded
from eventbus.delivery.guards import AfterSent, Batch, Check, Delivery, Guard
from eventbus.delivery.verdict import GO, Verdict, wait
from eventbus.fastpath.bookkeeping import Reply, RoundTrip
from eventbus.observability import counters
from eventbus.redis import client, key

# Seconds before a delivery that found the lock taken comes back.
RECHECK = 1.0

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@lru_cache(maxsize=1)
def release_script() -> Script:
    """Give the lock (``KEYS[1]``) back if it is still held with the token ``ARGV[1]``: it may have
    expired and been taken by another delivery since."""
    return client().register_script(_RELEASE_LUA)


def lock_key(subscriber: str, event_id: object) -> str:
    return key("effect-lock", subscriber, str(event_id))


def acquire_into(pipe: redis.client.Pipeline, subscriber: str, event_id: object, seconds: float, token: str) -> None:
    """Take the lock for ``seconds`` with ``token``, queued on ``pipe``; its first reply is true when it was
    taken, and not when another delivery holds it; its second, whether an earlier delivery did the effect
    without its ledger entry (eventbus/delivery/unrecorded.py), asked in the same round trip."""
    pipe.set(lock_key(subscriber, event_id), token, nx=True, px=max(1, int(seconds * 1000)))
    pipe.exists(unrecorded.key_of(subscriber, event_id))


class EffectLock(Guard):
    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        asked: dict[Delivery, tuple[str, Reply]] = {}
        for delivery in batch.deliveries:
            subscription = delivery.subscription
            if subscription.transactional:
                continue  # its effect commits with its ledger entry: the entry's unique index keeps duplicates out
            token = uuid.uuid4().hex
            take = partial(
                acquire_into,
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
                    delivery.effect_done = bool(reply.values[1])
                    verdicts.append(GO)
                else:
                    verdicts.append(wait(RECHECK, "another delivery of this event is under way", counters.EFFECT_WAITS))
            return verdicts

        return check

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        for delivery in batch.deliveries:
            if delivery.lock_token is not None:
                lock = lock_key(delivery.subscription.name, delivery.event.id)
                round_trip.script(release_script(), [lock], [delivery.lock_token])
                delivery.lock_token = None
            if delivery.effect_done and outcome.goes_on:
                # The ledger entry is written now: the note of the effect is no longer needed.
                done = unrecorded.key_of(delivery.subscription.name, delivery.event.id)
                round_trip.queue(lambda pipe, done=done: pipe.delete(done))
        return None


GUARD = EffectLock()
