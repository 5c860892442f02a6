"""Dead letters: messages that failed for good, captured, stored, inspected, replayed and purged.

Celery on Redis has no dead-letter queue, so the bus builds one:

- :mod:`~eventbus.deadletters.failure` describes a failure (no Django models, safe anywhere);
- :mod:`~eventbus.deadletters.capture` sends it to the ``dead_letter`` queue, or writes it
  directly to the database when the broker refuses;
- :mod:`~eventbus.deadletters.poison` turns a raw broker message that never reached a task into a failure;
- :mod:`~eventbus.deadletters.store` writes the DeadLetter row, idempotently;
- :mod:`~eventbus.deadletters.operations` lists, replays and purges; the management
  command, Django admin and the ops pages all call it.

Public API for the consumer::

    from eventbus.deadletters import DeadLetterFailure, Kind, send_to_dead_letter
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.deadletters.capture import send_to_dead_letter
    from eventbus.deadletters.failure import DeadLetterFailure, Kind

__all__ = ["DeadLetterFailure", "Kind", "send_to_dead_letter"]

_LAZY = {
    "DeadLetterFailure": "eventbus.deadletters.failure",
    "Kind": "eventbus.deadletters.failure",
    "send_to_dead_letter": "eventbus.deadletters.capture",
}


def __getattr__(name: str) -> Any:
    # Lazy, because eventbus.models imports Kind from this package: importing
    # the package must not import models before Django's apps are ready.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
