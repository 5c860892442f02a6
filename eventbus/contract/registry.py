"""The subscriber registry: which subscribers receive which event types, on which queue.

Filled by the ``@subscriber`` decorator when the apps' ``subscribers`` modules
are imported; checked once all are loaded, so an incomplete declaration fails
at start, not at the first event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eventbus.contract import catalogue
from eventbus.contract.errors import EventDeclarationError

if TYPE_CHECKING:
    from celery import Task
    from redis.commands.core import Script

    from eventbus.contract.envelope import Envelope
    from eventbus.contract.retry import RetryPolicy
    from eventbus.protection.breaker import CircuitBreaker

Handler = Callable[["Envelope"], Any]


class Limiter(Protocol):
    """A shared rate limiter: ``try_acquire()`` takes a grant (0.0) or says how long to wait.

    ``acquire_call()`` gives the Redis script, keys and arguments that
    ``try_acquire`` runs (its reply: ``[wait in microseconds, ...]``), so that
    the consumer takes the token in the same round trip as its other checks
    (eventbus/fastpath/bookkeeping.py).
    """

    name: str

    def try_acquire(self) -> float: ...

    def acquire_call(self) -> tuple[Script, list[str], list[object]]: ...


LimiterFactory = Callable[[], Limiter]
BreakerFactory = Callable[[], "CircuitBreaker"]


@dataclass(frozen=True)
class Subscription:
    """One subscriber: a handler, the event types it consumes and how its messages travel."""

    name: str
    """Stable task name, e.g. ``notifications.send_welcome_email``; also the ledger key."""
    event_types: tuple[str, ...]
    queue: str
    handler: Handler
    retry: RetryPolicy
    critical: bool
    """Critical subscribers never lose an event; others may be shed under load."""
    label: str
    """What a person reads on the status page, e.g. ``welcome email``."""
    done_label: str
    """The word for a finished effect, e.g. ``sent`` or ``recorded``."""
    task: Task
    ordered: bool = False
    """Defer an event until this subscriber handled the aggregate's earlier ones; ignore stale ones."""
    limiter: LimiterFactory | None = None
    """Builds the shared token bucket to take a token from before each call (a provider's rate limit)."""
    breaker: BreakerFactory | None = None
    """Builds the shared circuit breaker around the provider this subscriber calls."""
    soft_time_limit: float | None = None
    time_limit: float | None = None
    transactional: bool = True
    """The handler's effect is in the database and commits with the ledger entry; False for an email."""
    batch: int | None = None
    """Up to this many events per handler call (eventbus/delivery/batch.py); the handler then takes a list."""

    def call_handler(self, event: Envelope) -> None:
        """Call the handler with one event, as a list of one for a batching subscriber."""
        self.handler([event] if self.batch else event)


_subscriptions: dict[str, Subscription] = {}


def ensure_free(name: str) -> None:
    if name in _subscriptions:
        raise EventDeclarationError(f"subscriber {name!r} is declared twice")


def register(subscription: Subscription) -> None:
    ensure_free(subscription.name)
    _subscriptions[subscription.name] = subscription


def unregister(name: str) -> None:
    """Remove a subscriber (tests that declare one of their own clean up with this)."""
    _subscriptions.pop(name, None)


def get(name: str) -> Subscription:
    return _subscriptions[name]


def find(name: str) -> Subscription | None:
    return _subscriptions.get(name)


def all_subscriptions() -> list[Subscription]:
    return sorted(_subscriptions.values(), key=lambda s: s.name)


def subscriptions_for(event_type: str) -> list[Subscription]:
    return [s for s in all_subscriptions() if event_type in s.event_types]


def check() -> None:
    """Every subscriber consumes declared event types; every event type has a subscriber."""
    declared = {t.name for t in catalogue.all_types()}
    for subscription in _subscriptions.values():
        unknown = sorted(set(subscription.event_types) - declared)
        if unknown:
            raise EventDeclarationError(
                f"subscriber {subscription.name!r} consumes undeclared event types: {', '.join(unknown)}"
            )
    consumed = {t for s in _subscriptions.values() for t in s.event_types}
    orphans = sorted(declared - consumed)
    if orphans:
        raise EventDeclarationError(f"event types without a subscriber: {', '.join(orphans)}")
