"""A sliding-window rate limit in Redis: at most N grants in any window, cluster-wide.

The token bucket (:mod:`eventbus.protection.tokenbucket`) bounds the long-run average but
lets a full bucket burst: at "10/s" any one second may see up to 20 grants.
A provider that counts "10 per second" in a sliding window refuses the
excess. This limiter keeps a log of grant times (a sorted set, on the Redis
server's clock) and grants only while fewer than ``limit`` lie inside the
last ``window`` seconds, so no window of that length ever holds more.

``guard`` widens the window a little beyond the provider's period: what the
provider counts is when a message *arrives*, a few milliseconds after the
grant, and those delays vary. A window of period + guard absorbs that jitter
(up to ``guard``), at the price of a throughput ``period / (period + guard)``
below the limit.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from functools import lru_cache

import redis
from redis.commands.core import Script

from eventbus.protection.tokenbucket import Rate, parse_rate
from eventbus.redis import client, key

_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {0, now}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {oldest + window - now + 1, now}
"""


@lru_cache(maxsize=4)
def _script(connection: redis.Redis) -> Script:
    return connection.register_script(_ACQUIRE_LUA)


@dataclass(frozen=True)
class WindowLimiter:
    """At most ``limit`` grants in any window of ``period + guard`` seconds (Redis server time)."""

    name: str
    limit: int
    period: float
    guard: float = 0.0

    @classmethod
    def for_rate(cls, name: str, text: str, *, setting: str = "rate", guard: float = 0.0) -> WindowLimiter:
        """From "10/s", "600/m", "2.5/s": a whole number per period, rounded down (never above the rate)."""
        return cls.from_rate(name, parse_rate(text, setting=setting), guard=guard)

    @classmethod
    def from_rate(cls, name: str, rate: Rate, *, guard: float = 0.0) -> WindowLimiter:
        per_second = rate.tokens_per_second
        if per_second >= 1:
            return cls(name, math.floor(per_second), 1.0, guard)
        return cls(name, 1, 1.0 / per_second, guard)

    @property
    def window(self) -> float:
        return self.period + self.guard

    @property
    def redis_key(self) -> str:
        return key("window", self.name)

    def try_acquire(self) -> float:
        """Take a grant and return 0.0, or return the seconds until the oldest grant leaves the window.

        Raises ``redis.RedisError`` when Redis cannot be reached; the caller decides.
        """
        connection = client()
        script, keys, args = self.acquire_call()
        wait_us, _ = script(keys=keys, args=args, client=connection)
        return int(wait_us) / 1_000_000

    def acquire_call(self) -> tuple[Script, list[str], list[object]]:
        """``try_acquire``'s script, keys and arguments, for a caller's pipeline (eventbus/fastpath/bookkeeping.py);
        its reply is ``[wait in microseconds, now]``."""
        window_us = math.ceil(self.window * 1_000_000)
        args: list[object] = [self.limit, window_us, uuid.uuid4().hex, math.ceil(self.window * 1000) + 1000]
        return _script(client()), [self.redis_key], args

    def grants_in_window(self) -> int:
        """Grants in the current window (for ops pages)."""
        connection = client()
        now_s, now_us = connection.time()
        now = now_s * 1_000_000 + now_us
        return int(connection.zcount(self.redis_key, now - math.ceil(self.window * 1_000_000), "+inf"))
