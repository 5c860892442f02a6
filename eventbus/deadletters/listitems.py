"""A Redis list item the worker popped, read as a kombu message, or set aside as a poison dead letter.

kombu's own ``_brpop_read`` decodes a popped item without a guard, and builds
the message by key: an item that is not JSON or not a kombu message (pushed by
hand, by another program, or cut short) raised in the worker's main process,
which stopped, and the item, already off its list, was lost. The project's
transport (eventbus/fastpath/broker.py) reads every popped item through here instead.

Loaded with the transport, before Django is set up: what needs Django is
imported where it is used.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from eventbus.deadletters.shapes import redis_item_problem

log = logging.getLogger(__name__)


def readable_item(item: bytes, queue: str) -> dict[str, Any] | None:
    """The kombu message a popped list item holds; or None, the item set aside as a poison dead letter."""
    try:
        payload = loads(bytes_to_str(item))
    except (ValueError, TypeError, KeyError) as exc:  # kombu's loads: json's errors, or its own type hooks'
        reason = f"the list item is not JSON: {exc}"
    else:
        problem = redis_item_problem(payload)
        if problem is None:
            return payload
        reason = problem
    _set_aside(item, queue, reason)
    return None


def _set_aside(item: bytes, queue: str, reason: str) -> None:
    """Store ``item`` as a poison dead letter (its text, capped); never raises."""
    log.error("%s: a list item that is not a kombu message was taken off the queue: %s", queue, reason)
    try:
        # Imported here: the transport loads before Django is set up.
        from eventbus.deadletters.capture import send_to_dead_letter
        from eventbus.deadletters.poison import failure_from_raw_item

        send_to_dead_letter(failure_from_raw_item(item, queue=queue, reason=reason))
    except Exception:
        # Neither the broker nor the database took it (send_to_dead_letter
        # logged the record it could): the log is the last place for the item.
        log.critical("%s: list item NOT STORED as a dead letter; the item: %r", queue, item, exc_info=True)
