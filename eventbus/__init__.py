"""The event bus: envelope, outbox, dispatch, relay, subscribers and the consumer base task.

Public API for producers and consumers::

    from eventbus import publish, subscriber, event_type, upcaster, Envelope, RetryPolicy

and, for what a handler raises and what a subscriber declares:

- ``PermanentError`` (a failure retrying will not fix: dead-lettered at once)
  and ``PoisonMessage`` (a message that can never be processed);
- ``TokenBucket``, ``WindowLimiter``, ``CircuitBreaker``, ``Rate`` and
  ``parse_rate``: the limiter and breaker factories a subscriber declares, and
  the "10/s" rates they read from settings;
- ``set_correlation_id`` / ``reset_correlation_id``: a producer outside a
  request (a command) names the correlation id its events carry;
- ``Retention`` / ``register_retention``: an app names the tables it owns to
  the bus's bounded purge (beat's ``eventbus.purge_expired``).

Beyond these, three modules are public: ``eventbus.ops_api`` (what operators
read and do), ``eventbus.doors`` (the request path's and the fast path's few
narrow doors) and ``eventbus.models`` (the bus's tables, for reading; see
ops_api's docstring), with ``eventbus.admin`` for an app's admin of rows the
bus writes. Every other module is the bus's own and may move;
tests/contract/test_public_api.py keeps the apps to this list.

It knows nothing of users or emails: producers declare event types, consumers
declare subscribers, and this package carries events between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.contract.catalogue import event_type, upcaster
    from eventbus.contract.envelope import Envelope
    from eventbus.contract.errors import PermanentError, PoisonMessage
    from eventbus.contract.retry import RetryPolicy
    from eventbus.contract.subscriber import subscriber
    from eventbus.observability.context import reset_correlation_id, set_correlation_id
    from eventbus.operations.retention import Retention
    from eventbus.operations.retention import register as register_retention
    from eventbus.outbox.publish import publish
    from eventbus.protection.breaker import CircuitBreaker
    from eventbus.protection.tokenbucket import Rate, TokenBucket, parse_rate
    from eventbus.protection.windowlimit import WindowLimiter

__all__ = [
    "CircuitBreaker",
    "Envelope",
    "PermanentError",
    "PoisonMessage",
    "Rate",
    "Retention",
    "RetryPolicy",
    "TokenBucket",
    "WindowLimiter",
    "event_type",
    "parse_rate",
    "publish",
    "register_retention",
    "reset_correlation_id",
    "set_correlation_id",
    "subscriber",
    "upcaster",
]

# Public name -> (module, name there).
_LAZY = {
    "CircuitBreaker": ("eventbus.protection.breaker", "CircuitBreaker"),
    "Envelope": ("eventbus.contract.envelope", "Envelope"),
    "PermanentError": ("eventbus.contract.errors", "PermanentError"),
    "PoisonMessage": ("eventbus.contract.errors", "PoisonMessage"),
    "Rate": ("eventbus.protection.tokenbucket", "Rate"),
    "Retention": ("eventbus.operations.retention", "Retention"),
    "RetryPolicy": ("eventbus.contract.retry", "RetryPolicy"),
    "TokenBucket": ("eventbus.protection.tokenbucket", "TokenBucket"),
    "WindowLimiter": ("eventbus.protection.windowlimit", "WindowLimiter"),
    "event_type": ("eventbus.contract.catalogue", "event_type"),
    "parse_rate": ("eventbus.protection.tokenbucket", "parse_rate"),
    "publish": ("eventbus.outbox.publish", "publish"),
    "register_retention": ("eventbus.operations.retention", "register"),
    "reset_correlation_id": ("eventbus.observability.context", "reset_correlation_id"),
    "set_correlation_id": ("eventbus.observability.context", "set_correlation_id"),
    "subscriber": ("eventbus.contract.subscriber", "subscriber"),
    "upcaster": ("eventbus.contract.catalogue", "upcaster"),
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing `eventbus` before Django is set up (settings,
    # celery.py) does not import models.
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(name)
