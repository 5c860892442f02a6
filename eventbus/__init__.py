"""The event bus: envelope, outbox, dispatch, relay, subscribers and the consumer base task.

Public API::

    from eventbus import publish, subscriber, event_type, Envelope, RetryPolicy

It knows nothing of users or emails: producers declare event types, consumers
declare subscribers, and this package carries events between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.contract.catalogue import event_type
    from eventbus.contract.envelope import Envelope
    from eventbus.contract.retry import RetryPolicy
    from eventbus.contract.subscriber import subscriber
    from eventbus.outbox.publish import publish

__all__ = ["Envelope", "RetryPolicy", "event_type", "publish", "subscriber"]

_LAZY = {
    "Envelope": "eventbus.contract.envelope",
    "RetryPolicy": "eventbus.contract.retry",
    "event_type": "eventbus.contract.catalogue",
    "publish": "eventbus.outbox.publish",
    "subscriber": "eventbus.contract.subscriber",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing `eventbus` before Django is set up (settings,
    # celery.py) does not import models.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
