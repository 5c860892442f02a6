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
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache

import redis
from redis.commands.core import Script

from eventbus.redis import client, key

log = logging.getLogger(__name__)

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@lru_cache(maxsize=1)
def release_script() -> Script:
    """The release, as a script (eventbus/fastpath/bookkeeping.py sends it in its pipeline)."""
    return client().register_script(_RELEASE_LUA)


def lock_key(subscriber: str, event_id: object) -> str:
    return key("effect-lock", subscriber, str(event_id))


def acquire(subscriber: str, event_id: object, seconds: float) -> str | None:
    """Take the lock for ``seconds``; returns its token, or None while another delivery holds it."""
    token = uuid.uuid4().hex
    taken = client().set(lock_key(subscriber, event_id), token, nx=True, px=_ms(seconds))
    return token if taken else None


def acquire_into(pipe: redis.client.Pipeline, subscriber: str, event_id: object, seconds: float, token: str) -> None:
    """``acquire``'s command with ``token``, queued on ``pipe``; its reply is true when the lock was taken."""
    pipe.set(lock_key(subscriber, event_id), token, nx=True, px=_ms(seconds))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def release(subscriber: str, event_id: object, token: str) -> None:
    """Give the lock back, if it is still ours (it may have expired and been taken since).

    Best effort: the effect has happened by now, and a lock that cannot be
    released (Redis out of reach) expires by itself.
    """
    try:
        # On the current client: the script object is cached, and its own client may be one REDIS_URL ago.
        release_script()(keys=[lock_key(subscriber, event_id)], args=[token], client=client())
    except redis.RedisError as exc:
        log.warning("effect lock of %s for %s not released (it expires): %s", event_id, subscriber, exc)
