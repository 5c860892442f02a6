"""What each circuit breaker and shared rate limiter says now, for operators (ops pages, /metrics).

Each is read once per name, however many subscribers share it, from the
factories the subscribers declared. Reading never changes a breaker or takes a
grant. Raises ``redis.RedisError`` when Redis cannot be reached; the caller (a
status page) shows the part as unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.contract import registry
from eventbus.protection.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, StateName
from eventbus.protection.windowlimit import WindowLimiter
from eventbus.redis import client

BREAKER_STATES: tuple[StateName, ...] = (CLOSED, HALF_OPEN, OPEN)
"""A breaker's state names, from calling freely to calling nobody."""


@dataclass(frozen=True)
class BreakerStatus:
    name: str
    state: str
    """``closed``, ``half_open`` or ``open``, as a caller would meet it now."""
    consecutive_failures: int
    failure_threshold: int
    probe_in_seconds: float | None
    """While open: seconds (on the Redis server's clock) until one probe may call again."""
    subscribers: tuple[str, ...]

    @property
    def state_label(self) -> str:
        return self.state.replace("_", "-")


@dataclass(frozen=True)
class LimiterStatus:
    name: str
    grants_in_window: int | None
    """None for a limiter that cannot tell (only the sliding window can)."""
    limit: int | None
    window_seconds: float | None
    subscribers: tuple[str, ...]


def _server_seconds() -> float:
    seconds, micros = client().time()
    return float(seconds) + micros / 1_000_000


def breaker_states() -> tuple[BreakerStatus, ...]:
    """Each circuit breaker the subscriptions use, once per breaker name, as a caller would meet it now."""
    found: dict[str, tuple[CircuitBreaker, list[str]]] = {}
    for subscription in registry.all_subscriptions():
        if subscription.breaker is not None:
            breaker = subscription.breaker()
            found.setdefault(breaker.name, (breaker, []))[1].append(subscription.name)
    statuses = []
    for name, (breaker, users) in sorted(found.items()):
        state = breaker.state()
        probe_in = None
        if state.state == OPEN and state.half_open_at is not None:
            probe_in = max(0.0, state.half_open_at - _server_seconds())
        statuses.append(
            BreakerStatus(
                name=name,
                state=state.state,
                consecutive_failures=state.consecutive_failures,
                failure_threshold=breaker.failure_threshold,
                probe_in_seconds=probe_in,
                subscribers=tuple(users),
            )
        )
    return tuple(statuses)


def limiter_states() -> tuple[LimiterStatus, ...]:
    """Each shared rate limiter the subscriptions use, once per name: grants in its current window."""
    found: dict[str, tuple[registry.Limiter, list[str]]] = {}
    for subscription in registry.all_subscriptions():
        if subscription.limiter is not None:
            limiter = subscription.limiter()
            found.setdefault(limiter.name, (limiter, []))[1].append(subscription.name)
    statuses = []
    for name, (limiter, users) in sorted(found.items()):
        if isinstance(limiter, WindowLimiter):
            status = LimiterStatus(name, limiter.grants_in_window(), limiter.limit, limiter.window, tuple(users))
        else:
            status = LimiterStatus(name, None, None, None, tuple(users))
        statuses.append(status)
    return tuple(statuses)
