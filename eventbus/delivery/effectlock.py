"""A short lock per (event, subscriber) for effects outside the database (an email).

A handler whose effect is in the database runs inside the transaction that
writes its ledger entry, so a concurrent duplicate waits on the entry's unique
index. A handler that sends an email must not hold a database transaction
open across the network (on SQLite that would be the whole database's write
lock for the length of an SMTP conversation). It runs outside any
transaction instead, and two deliveries of the same event at the same moment
are kept apart by this lock in Redis: the second waits and then finds the
ledger entry. The lock expires after the handler's time limit, so a worker
that died holding it delays a redelivery, never blocks it.

The lock is taken and given back in a delivery's round trips
(eventbus/delivery/guards/effectlock.py).
"""

from __future__ import annotations

from functools import lru_cache

import redis
from redis.commands.core import Script

from eventbus.redis import client, key

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
    """Take the lock for ``seconds`` with ``token``, queued on ``pipe``; its reply is true when it was taken,
    and not when another delivery holds it."""
    pipe.set(lock_key(subscriber, event_id), token, nx=True, px=max(1, int(seconds * 1000)))
