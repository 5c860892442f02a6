"""The worker's consumer, extended to dead-letter poison messages instead of only logging them.

Celery meets some messages before any task code runs: a body that is not valid
JSON, a content type the worker does not accept (pickle), a task name nobody
registered. Its stock consumer logs and discards them, so they are gone. This
one first sends each to the ``dead_letter`` queue as a ``poison`` dead letter,
then lets Celery settle the message as before: acknowledged (or rejected
without requeue, which on Redis is the same), never requeued, because a
message that cannot be decoded now never will be, and requeueing would loop.

Enabled by ``CELERY_WORKER_CONSUMER = "eventbus.worker:DeadLetteringConsumer"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

log = logging.getLogger(__name__)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]  # celery ships no type hints
    """Celery's consumer, plus: every message it would discard becomes a ``poison`` dead letter.

    Guarantees: the hook never raises into the worker (a failure to capture
    is logged in full, see ``send_to_dead_letter``), and the message is
    always settled without requeue.
    """

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        reason = f"body could not be decoded as {message.content_type or 'unknown content'}: {exc}"
        _dead_letter(message, reason, exc)
        _settle(message, super().on_decode_error, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            reason = f"content type {message.content_type!r} is not accepted by this worker: {exc}"
        else:
            reason = f"invalid task message: {exc}"
        _dead_letter(message, reason, exc)
        _settle(message, super().on_invalid_task, body, message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        reason = f"unregistered task {headers.get('task')!r}: no worker on this queue knows it"
        _dead_letter(message, reason, exc, exception_type="celery.exceptions.NotRegistered")
        _settle(message, super().on_unknown_task, body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _dead_letter(message, "not a Celery task message: it names no task", None, exception_type="UnknownMessage")
        _settle(message, super().on_unknown_message, body, message)


def _dead_letter(message: Any, reason: str, exc: BaseException | None, *, exception_type: str | None = None) -> None:
    """Capture ``message`` as a poison dead letter; never raises."""
    try:
        # Imported here: the worker loads this module while it starts, before
        # the Django fixup has set Django up; these modules need it.
        from eventbus.deadletters.capture import send_to_dead_letter
        from eventbus.deadletters.poison import failure_from_message

        send_to_dead_letter(failure_from_message(message, reason=reason, exc=exc, exception_type=exception_type))
    except Exception:
        # Never crash the consumer. If the dead letter could not be captured at
        # all, send_to_dead_letter has already logged the whole record.
        log.exception("could not dead-letter a poison message from %r", message.delivery_info)


def _settle(message: Any, celery_default: Callable[..., None], *args: Any) -> None:
    """Run Celery's own handling, then make sure the message is settled, never requeued.

    Celery's handling logs the message, sends its signals and, for an unknown
    task, stores a failed result; it acknowledges or rejects without requeue.
    """
    try:
        celery_default(*args)
    except Exception:
        log.exception("Celery's handling of a poison message failed")
    finally:
        # Left unacknowledged, the message would hold a prefetch slot, then come
        # back after the visibility timeout and fail again.
        if not message.acknowledged:
            try:
                message.ack()
            except Exception:
                log.exception("could not acknowledge a poison message")
        # This is the consumer's thread, not a task's: nothing else closes a
        # connection that the database fallback or the result backend opened here.
        from django.db import close_old_connections

        close_old_connections()
