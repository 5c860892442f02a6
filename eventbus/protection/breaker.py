"""A circuit breaker whose state lives in Redis, shared by every worker process on every host.

After ``failure_threshold`` consecutive failures the breaker opens for all
workers at once: nobody calls the provider for ``reset_timeout`` seconds, and
tasks are rescheduled for when it half-opens instead of hammering a dead
provider. Then a single caller, the probe, tries; its success closes the
breaker, its failure opens it for another ``reset_timeout``.

Every transition is one Lua script on the Redis server's clock, so concurrent
workers never both win the probe and hosts with skewed clocks agree on when
the breaker half-opens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import redis
from redis.commands.core import Script

from eventbus.redis import client, key

log = logging.getLogger(__name__)

StateName = Literal["closed", "open", "half_open"]

CLOSED: StateName = "closed"
OPEN: StateName = "open"
HALF_OPEN: StateName = "half_open"

# A breaker nobody has touched for a day is forgotten (it reads as closed with
# no failures): its provider has had ample time to recover, and breakers whose
# names are gone do not pile up in Redis.
IDLE_TTL = 24 * 3600.0

# The hash under key("breaker", name) holds: state (absent: closed), failures
# (consecutive), opened_at, half_open_at and probe_until (whole microseconds of
# the Redis server's clock, which a Lua number holds exactly). No key at all
# means closed with no failures.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# ARGV: probe lease (us), TTL (ms). Returns {state before, state after, wait in
# us}; a wait of -1 means "go ahead", -2 "go ahead as the probe that replaces
# one whose lease expired".
_BEFORE_CALL_LUA = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'half_open_at', 'probe_until')
local state = h[1] or 'closed'
if state == 'closed' then
  return {state, state, -1}
end
if state == 'open' then
  local half_open_at = tonumber(h[2]) or 0
  if now < half_open_at then
    return {state, state, half_open_at - now}
  end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[1]))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {state, 'half_open', -1}
end
local probe_until = tonumber(h[3]) or 0
if now < probe_until then
  return {state, state, probe_until - now}
end
-- The probe's lease ran out without a verdict (its worker died or hung): this
-- caller becomes the probe, so the breaker cannot stay half-open forever.
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {state, state, -2}
"""
)

# Returns the state before. Success closes from any state: the provider just
# answered, whoever asked.
_SUCCESS_LUA = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('DEL', KEYS[1])
return state
"""

# ARGV: failure threshold, reset timeout (us), TTL (ms). Returns {state before,
# state after, consecutive failures}.
_FAILURE_LUA = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local after = state
if (state == 'closed' and failures >= tonumber(ARGV[1])) or state == 'half_open' then
  after = 'open'
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'half_open_at', now + tonumber(ARGV[2]))
  redis.call('HDEL', KEYS[1], 'probe_until')
end
-- Open stays open until its half_open_at: a late failure of a call that began
-- before the breaker opened is counted but does not postpone the probe.
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {state, after, failures}
"""
)

# Returns {state, failures, opened_at, half_open_at, probe_until, now}, '' for absent.
_STATE_LUA = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at', 'half_open_at', 'probe_until')
return {h[1] or 'closed', h[2] or '0', h[3] or '', h[4] or '', h[5] or '', now}
"""
)


@dataclass(frozen=True)
class _Scripts:
    before_call: Script
    success: Script
    failure: Script
    state: Script


@lru_cache(maxsize=4)
def _scripts(connection: redis.Redis) -> _Scripts:
    # One set per client: tests swap the client when they change REDIS_URL.
    return _Scripts(
        before_call=connection.register_script(_BEFORE_CALL_LUA),
        success=connection.register_script(_SUCCESS_LUA),
        failure=connection.register_script(_FAILURE_LUA),
        state=connection.register_script(_STATE_LUA),
    )


def _seconds(us: str | int) -> float | None:
    return None if us == "" else float(us) / 1_000_000


def _us(seconds: float) -> int:
    return math.ceil(seconds * 1_000_000)


@dataclass(frozen=True)
class BreakerState:
    """A snapshot for ops pages and metrics; times are Unix seconds on the Redis server's clock.

    ``state`` is what a caller would meet now: an open breaker whose
    ``half_open_at`` has passed reads as ``half_open`` (the next caller
    probes). ``probe_until`` is the lease of the probe in flight, if any.
    """

    name: str
    state: StateName
    consecutive_failures: int
    opened_at: float | None
    half_open_at: float | None
    probe_until: float | None = None


class CircuitBreaker:
    """A circuit breaker shared through Redis by every process that uses the same ``name``.

    Use::

        wait = breaker.before_call()
        if wait is not None:
            ...  # do not call the provider; reschedule in ``wait`` seconds
        try:
            call_the_provider()
        except ProviderDown:
            breaker.record_failure()
            raise
        script, keys, args = breaker.success_call()
        breaker.note_success(script(keys=keys, args=args))

    (a delivery sends the success in the round trip after its effect:
    eventbus/delivery/guards/breaker.py).

    Guarantees, on the Redis server's clock:

    - Closed: everyone calls. ``failure_threshold`` consecutive failures (no
      success in between, from any worker) open it.
    - Open: nobody calls until ``opened_at + reset_timeout``; ``before_call``
      returns the seconds left.
    - Half-open: exactly one caller at a time holds the probe slot;
      ``before_call`` returns None to that caller only, and to the others the
      seconds left on the probe's lease. The lease (``probe_lease``, by default
      ``reset_timeout``) must exceed the longest provider call: when it runs
      out without a verdict, the next caller becomes the probe, so a probe
      whose worker died cannot keep the breaker half-open forever.
    - Any success closes it and resets the count; a failure while half-open
      (the probe's) opens it for another ``reset_timeout``. A late failure
      while open is counted but does not postpone the probe.

    The verdicts carry no caller identity, so a straggler (a call that began
    before the breaker opened) also counts: its success closes the breaker,
    its failure during half-open reopens it. Both are real evidence about the
    provider.

    Raises ``redis.RedisError`` when Redis cannot be reached; the caller (a
    task that retries) decides.
    """

    def __init__(
        self, name: str, failure_threshold: int, reset_timeout: float, *, probe_lease: float | None = None
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if not reset_timeout > 0:
            raise ValueError(f"reset_timeout must be positive, not {reset_timeout}")
        lease = reset_timeout if probe_lease is None else probe_lease
        if not lease > 0:
            raise ValueError(f"probe_lease must be positive, not {probe_lease}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.probe_lease = lease
        # The state must outlive an open period and a probe's lease, or an
        # open breaker would silently close.
        self._ttl_ms = _us(max(IDLE_TTL, 2 * (reset_timeout + lease))) // 1000

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self.failure_threshold}, {self.reset_timeout:g})"

    @property
    def redis_key(self) -> str:
        # Read on each use, not stored: the key prefix is a setting that tests override.
        return key("breaker", self.name)

    def before_call(self) -> float | None:
        """None: go ahead (closed, or this caller holds the probe slot). A float: seconds not to call for."""
        connection = client()
        before, after, wait_us = _scripts(connection).before_call(
            keys=[self.redis_key], args=[_us(self.probe_lease), self._ttl_ms], client=connection
        )
        wait_us = int(wait_us)
        if wait_us == -2:
            log.warning(
                "circuit breaker %s: the probe's lease expired without a verdict; a new probe goes ahead", self.name
            )
        elif before != after:
            log.info("circuit breaker %s: %s -> %s; one probe goes ahead", self.name, before, after)
        # A wait rounds up to at least a microsecond: 0 would read as "go ahead" to a careless caller.
        return None if wait_us < 0 else max(wait_us, 1) / 1_000_000

    def success_call(self) -> tuple[Script, list[str], list[object]]:
        """The provider answered: the script, keys and arguments that close the breaker and reset the
        count of consecutive failures, for a caller's round trip (eventbus/fastpath/bookkeeping.py);
        its reply, the state before, goes to ``note_success``."""
        return _scripts(client()).success, [self.redis_key], []

    def note_success(self, before: str) -> None:
        if before != CLOSED:
            log.info("circuit breaker %s: %s -> closed", self.name, before)

    def record_failure(self) -> None:
        """The provider failed: count it; at the threshold, or if this was the probe, open the breaker."""
        connection = client()
        before, after, failures = _scripts(connection).failure(
            keys=[self.redis_key],
            args=[self.failure_threshold, _us(self.reset_timeout), self._ttl_ms],
            client=connection,
        )
        if before == HALF_OPEN:
            log.warning(
                "circuit breaker %s: the probe failed; half_open -> open for %gs", self.name, self.reset_timeout
            )
        elif before != after:
            log.warning(
                "circuit breaker %s: closed -> open after %s consecutive failures; probing again in %gs",
                self.name,
                failures,
                self.reset_timeout,
            )

    def state(self) -> BreakerState:
        """What a caller would meet now, read in one step on the Redis server's clock."""
        connection = client()
        raw_state, failures, opened_at, half_open_at, probe_until, now_us = _scripts(connection).state(
            keys=[self.redis_key], client=connection
        )
        state: StateName = HALF_OPEN if raw_state == HALF_OPEN else OPEN if raw_state == OPEN else CLOSED
        if state == OPEN and half_open_at != "" and int(now_us) >= float(half_open_at):
            state = HALF_OPEN
        return BreakerState(
            name=self.name,
            state=state,
            consecutive_failures=int(failures),
            opened_at=_seconds(opened_at),
            half_open_at=_seconds(half_open_at),
            probe_until=_seconds(probe_until),
        )
