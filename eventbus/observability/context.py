"""What the work in progress is about: a request, or a task handling an event.

Each field lives in a context variable, so it follows the code that set it
(one request, one task, one thread or asyncio task) and nothing else. Logging
copies the fields onto every log line (project/logging.py); publishing copies
the correlation id into every event envelope and every task's headers.

- ``correlation_id``: the HTTP request's id (``X-Request-ID``), carried by every
  event and task that request caused; a beat run gets a fresh one.
- ``event_id``, ``event_type``: the event being handled.
- ``subscriber``: the subscriber handling it.
- ``task_id``, ``task_name``: the Celery task running.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

FIELDS: tuple[str, ...] = ("correlation_id", "event_id", "event_type", "subscriber", "task_id", "task_name")

_VARS: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in FIELDS}
_correlation_id = _VARS["correlation_id"]

Bound = list[tuple[ContextVar[str | None], Token[str | None]]]


def get(name: str) -> str | None:
    """The current value of one field (``None`` when unset); raises KeyError for an unknown name."""
    return _VARS[name].get()


def current() -> dict[str, str]:
    """The fields that are set, by name."""
    values = {name: var.get() for name, var in _VARS.items()}
    return {name: value for name, value in values.items() if value}


def set_fields(**fields: object) -> Bound:
    """Set the given fields; ``None`` leaves a field as it was. Returns what ``reset_fields`` needs.

    For code that cannot use a ``with`` block (a pair of signal handlers);
    everything else should use ``bind``. Values are stored as strings.
    """
    unknown = set(fields) - set(_VARS)
    if unknown:
        raise TypeError(f"unknown context fields: {sorted(unknown)}")
    bound: Bound = []
    for name, value in fields.items():
        if value is None:
            continue
        var = _VARS[name]
        bound.append((var, var.set(str(value))))
    return bound


def reset_fields(bound: Bound) -> None:
    """Restore the fields ``set_fields`` changed, in reverse order, in the same context."""
    for var, token in reversed(bound):
        var.reset(token)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Set fields for the duration of the block, then restore what was there.

    ``with bind(event_id=str(event.id), subscriber=name): ...`` -- every log
    line inside carries them. ``None`` leaves a field unchanged.
    """
    bound = set_fields(**fields)
    try:
        yield
    finally:
        reset_fields(bound)


# --- the correlation id alone (the middleware and publish() use these) ------


def get_correlation_id() -> str | None:
    return _correlation_id.get()


def set_correlation_id(value: str | None) -> Token[str | None]:
    return _correlation_id.set(value)


def reset_correlation_id(token: Token[str | None]) -> None:
    _correlation_id.reset(token)


def new_correlation_id() -> str:
    return uuid.uuid4().hex
