"""A token bucket in Redis, shared by every worker process on every host.

Celery's own ``rate_limit`` counts per worker process; a provider's limit
("10 emails per second") is for the whole cluster, so the bucket lives in Redis
and is refilled and taken from in one Lua script, atomically, on the Redis
server's clock.

This module is imported by ``project/settings.py`` (to validate
``EMAIL_RATE_LIMIT`` at start), so at import time it must not touch settings
or import models: ``eventbus.redis`` only reads settings when called.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script

from eventbus.redis import client, key

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"^\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*/\s*(?P<unit>[smh])\s*$")


@dataclass(frozen=True)
class Rate:
    """A refill rate and the bucket's capacity (the largest burst), both in tokens."""

    tokens_per_second: float
    capacity: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tokens_per_second) and self.tokens_per_second > 0):
            raise ValueError(f"tokens_per_second must be a positive number, not {self.tokens_per_second!r}")
        # Below one token the bucket could never grant a single-token request.
        if not (math.isfinite(self.capacity) and self.capacity >= 1):
            raise ValueError(f"capacity must be a number of at least 1, not {self.capacity!r}")

    @classmethod
    def per_second(cls, tokens_per_second: float, capacity: float | None = None) -> Rate:
        """A rate whose capacity defaults to one second's worth of tokens, and at least one.

        Why one second: providers state and enforce their limits per second (or
        per minute, which a per-second pace also respects). With capacity =
        rate, any one-second window grants at most twice the rate (see
        :class:`TokenBucket`), and that only right after an idle second. A
        larger bucket would let a long idle spell be followed by a burst the
        provider refuses; a smaller one would waste the provider's allowance.
        Why at least one: with a slow rate (``30/m``) a capacity of 0.5 would
        never hold a whole token.
        """
        return cls(tokens_per_second, max(1.0, tokens_per_second) if capacity is None else capacity)


def parse_rate(text: str, setting: str = "rate") -> Rate:
    """Parse ``"10/s"``, ``"600/m"``, ``"36000/h"`` or ``"2.5/s"`` (Celery's ``rate_limit`` notation).

    A value that does not parse raises ImproperlyConfigured naming ``setting``
    and saying what to write instead, so that a typo stops the process at start.
    """
    match = _RATE_RE.match(text)
    # No match reads as NaN, which Rate refuses like a zero or an overflow.
    per_second = float(match["amount"]) / _UNIT_SECONDS[match["unit"]] if match else math.nan
    try:
        return Rate.per_second(per_second)
    except ValueError:
        raise ImproperlyConfigured(
            f"{setting}={text!r} is not a rate; write a positive number of tokens per second, minute or hour, "
            "e.g. '10/s', '600/m', '36000/h' or '2.5/s'."
        ) from None


# KEYS[1]: the bucket's hash {tokens, ts}. ARGV: tokens per second, capacity,
# tokens requested, TTL in ms. Returns {wait in microseconds (0: granted),
# the server's time in microseconds}.
#
# Time comes from the Redis server (TIME), never from the caller, so workers on
# hosts with skewed clocks agree. Times are whole microseconds, which a Lua
# number (a double) holds exactly; numbers passed to redis.call keep full
# precision (tostring() would round to 14 digits).
_ACQUIRE_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local requested = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
-- A server clock that stepped back (failover to another host) refills nothing
-- and keeps the old timestamp, so the same interval is never credited twice.
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate / 1000000)
  ts = now
end
-- The capacity may have been lowered since the last call.
tokens = math.min(tokens, capacity)
local wait = 0
if tokens >= requested then
  tokens = tokens - requested
else
  wait = math.ceil((requested - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', ts)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {wait, now}
"""


@lru_cache(maxsize=4)
def _acquire_script(connection: redis.Redis) -> Script:
    # One per client: tests swap the client when they change REDIS_URL.
    return connection.register_script(_ACQUIRE_LUA)


@dataclass(frozen=True)
class Decision:
    """The outcome of one attempt: ``wait`` is 0.0 when granted; ``at`` is the Redis server's time of the decision."""

    wait: float
    at: float

    @property
    def granted(self) -> bool:
        return self.wait == 0.0


class TokenBucket:
    """A token bucket shared through Redis by every process that uses the same ``name``.

    Guarantee: with ``C = rate.capacity`` and ``r = rate.tokens_per_second``,
    the tokens granted at Redis server times inside any closed interval
    ``[t, t + T]`` number at most ``C + r * T``, however many processes and
    hosts ask, and whatever their clocks say. (A full bucket holds ``C``, and
    at most ``r * T`` more arrive during the interval.) Consequences: with the
    default capacity ``C = max(1, r)``, any one-second window grants at most
    ``2r``, and over a long run the average is ``r``. Time is the Redis
    server's: should its clock jump forward, the bucket refills early (at most
    to full); should it step back, the bucket only gets stricter.

    The state (tokens, last refill time) is one Redis hash under
    ``key("ratelimit", name)``. It expires once the bucket has been idle long
    enough to be full again, so forgetting it changes nothing: a missing bucket
    starts full.

    Raises ``redis.RedisError`` when Redis cannot be reached: granting blindly
    could break the provider's limit, and refusing forever would hide the
    outage; the caller (a task that retries) decides.
    """

    def __init__(self, name: str, rate: Rate) -> None:
        self.name = name
        self.rate = rate
        # After capacity / rate idle seconds the bucket is full again, and a
        # missing bucket starts full: expiring then forgets nothing. One
        # second more is margin.
        self._ttl_ms = math.ceil(rate.capacity / rate.tokens_per_second * 1000) + 1000

    def __repr__(self) -> str:
        return f"TokenBucket({self.name!r}, {self.rate!r})"

    @property
    def redis_key(self) -> str:
        # Read on each use, not stored: the key prefix is a setting that tests override.
        return key("ratelimit", self.name)

    def decide(self, tokens: int = 1, connection: redis.Redis | None = None) -> Decision:
        """Take ``tokens`` if the bucket holds them; else take nothing and say how long until it will.

        ``connection``: the client to ask (the request path's, eventbus/redis.py), the bus's by default.
        """
        if not 1 <= tokens <= self.rate.capacity:
            raise ValueError(f"{self!r} can grant 1 to {self.rate.capacity:g} tokens at once, not {tokens}")
        connection = connection or client()
        script, keys, args = self.acquire_call(tokens)
        wait_us, now_us = script(keys=keys, args=args, client=connection)
        return Decision(wait=int(wait_us) / 1_000_000, at=int(now_us) / 1_000_000)

    def acquire_call(self, tokens: int = 1) -> tuple[Script, list[str], list[object]]:
        """``decide``'s script, keys and arguments, for a caller's pipeline (eventbus/fastpath/bookkeeping.py);
        its reply is ``[wait in microseconds, now in microseconds]``."""
        args: list[object] = [self.rate.tokens_per_second, self.rate.capacity, tokens, self._ttl_ms]
        return _acquire_script(client()), [self.redis_key], args

    def try_acquire(self, tokens: int = 1, connection: redis.Redis | None = None) -> float:
        """Take ``tokens`` and return 0.0, or take nothing and return the seconds until they will exist.

        The wait is exact for a caller who is alone: others may take the token
        first, so try again after it rather than assuming a grant. For one
        token it is never more than ``1 / tokens_per_second``.
        """
        return self.decide(tokens, connection).wait
