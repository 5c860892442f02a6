"""The event bus: envelope, outbox, dispatch, relay, subscribers and the consumer base task.

Public API::

    from eventbus import publish, subscriber, event_type, Envelope, RetryPolicy

It knows nothing of users or emails: producers declare event types, consumers
declare subscribers, and this package carries events between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.catalogue import event_type
    from eventbus.decorators import subscriber
    from eventbus.envelope import Envelope
    from eventbus.publish import publish
    from eventbus.retry import RetryPolicy

__all__ = ["Envelope", "RetryPolicy", "event_type", "publish", "subscriber"]

_LAZY = {
    "Envelope": "eventbus.envelope",
    "RetryPolicy": "eventbus.retry",
    "event_type": "eventbus.catalogue",
    "publish": "eventbus.publish",
    "subscriber": "eventbus.decorators",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing `eventbus` before Django is set up (settings,
    # celery.py) does not import models.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
