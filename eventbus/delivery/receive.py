"""The worker's consumer, extended to dead-letter poison messages instead of only logging them.

Celery meets some messages before any task code runs: a body that is not valid
JSON, a content type the worker does not accept (pickle), a task name nobody
registered. Its stock consumer logs and discards them, so they are gone. This
one first sends each to the ``dead_letter`` queue as a ``poison`` dead letter,
then lets Celery end the message as before: acknowledged (or rejected
without requeue, which on Redis is the same), never requeued, because a
message that cannot be decoded now never will be, and requeueing would loop.

It also checks each message's shape before Celery reads it
(``create_task_handler``): a body that is not ``[args, kwargs, embed]``, args
that are not a list or do not fit the task, a missing task id, a message over
``EVENTBUS_MAX_MESSAGE_BYTES``... Celery's strategies unpack such a message in
the worker's main process and raise an error nothing catches: the worker
stopped, and the unacknowledged message stopped the next one. Here it becomes
a poison dead letter like the others (eventbus/deadletters/shapes.py says why
each check is there).

Enabled by ``CELERY_WORKER_CONSUMER = "eventbus.delivery.receive:DeadLetteringConsumer"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed
from vine import promise

log = logging.getLogger(__name__)

# What reading a message of an unforeseen shape raises (unpacking, indexing,
# a missing attribute): the errors Celery's on_task_received does not catch.
_SHAPE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]  # celery ships no type hints
    """Celery's consumer, plus: every message it would discard becomes a ``poison`` dead letter.

    Guarantees: the hook never raises into the worker (a failure to capture
    is logged in full, see ``send_to_dead_letter``), and the message is
    always acknowledged or rejected, never requeued.
    """

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], None]:
        """Celery's ``on_task_received``, behind a check of each message's shape.

        Why here: this is the one function every task message passes through,
        whatever its task (ours, a batching one, Celery's own built-ins), and
        Celery's consumer lets a subclass build it (``worker_consumer``). A
        task's ``Strategy`` would cover only the tasks that set it, and could
        not see a task name that is not even a string (Celery looks it up in
        a dict first: ``TypeError``). The check comes before Celery reads the
        message, so a bad one is never half handed to the pool.
        """
        on_task_received = super().create_task_handler(promise)
        from django.conf import settings

        from eventbus.deadletters.shapes import task_message_problem

        tasks = self.app.tasks
        max_bytes = settings.EVENTBUS_MAX_MESSAGE_BYTES

        def guarded(message: Any) -> None:
            death = _from_broker_dead_letters(message)
            if death is not None:
                return _take_broker_dead_letter(message, *death)
            try:
                problem = task_message_problem(message, tasks, max_bytes)
                if problem is None:
                    return on_task_received(message)
            except _SHAPE_ERRORS as exc:
                # A shape the check did not foresee: still a poison message,
                # never the end of the worker. (Were it Celery failing after
                # it handed a good message on, the message would run and be
                # a dead letter too: the ledger keeps its effect once.)
                log.exception("a message could not be read")
                if message.acknowledged:
                    return None
                problem = f"the worker could not read the message: {type(exc).__name__}: {exc}"
            return self.on_invalid_task(None, message, InvalidTaskError(problem))

        return guarded

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        reason = f"body could not be decoded as {message.content_type or 'unknown content'}: {exc}"
        _dead_letter(message, reason, exc)
        _handle_then_acknowledge(message, super().on_decode_error, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            reason = f"content type {message.content_type!r} is not accepted by this worker: {exc}"
        else:
            reason = f"invalid task message: {exc}"
        _dead_letter(message, reason, exc)
        _handle_then_acknowledge(message, super().on_invalid_task, body, message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        reason = f"unregistered task {headers.get('task')!r}: no worker on this queue knows it"
        _dead_letter(message, reason, exc, exception_type="celery.exceptions.NotRegistered")
        _handle_then_acknowledge(message, super().on_unknown_task, body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _dead_letter(message, "not a Celery task message: it names no task", None, exception_type="UnknownMessage")
        _handle_then_acknowledge(message, super().on_unknown_message, body, message)


# x-death reasons of messages a worker or a sender ended on purpose (see _take_broker_dead_letter).
_ENDS_THE_BUS_CHOSE = frozenset({"rejected", "expired"})


def _from_broker_dead_letters(message: Any) -> tuple[str, str] | None:
    """(reason, queue) of a message RabbitMQ dead-lettered to the quorum profile's dead-letter queue, else None.

    Such a message is the whole original, task name and all: run here, it would be the
    subscriber's task on the wrong worker. RabbitMQ's own ``x-death`` header, and the
    exchange nothing else publishes to (eventbus/celery_settings.py), tell it apart.
    """
    from eventbus.celery_settings import BROKER_DEAD_LETTER_EXCHANGE

    info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    headers = message.headers if isinstance(message.headers, dict) else {}
    deaths = headers.get("x-death")
    if info.get("exchange") != BROKER_DEAD_LETTER_EXCHANGE or not deaths:
        return None
    # One entry per (queue, reason), the latest first; a countdown's trip through the
    # celery_delayed_* queues left "expired" entries behind it.
    latest = deaths[0] if isinstance(deaths, list) and isinstance(deaths[0], dict) else {}
    return str(latest.get("reason", "unknown")), str(latest.get("queue", "?"))


def _take_broker_dead_letter(message: Any, reason: str, queue: str) -> None:
    """A message RabbitMQ dead-lettered: a poison dead letter if it gave up on it; acknowledged either way.

    Two reasons are ends the bus chose, which on Redis leave nothing behind, so here too the
    message is acknowledged and nothing more: ``rejected`` (a worker ended it with
    reject(requeue=False), which the bus does only once it has dealt with the message: a
    poison dead letter, a Reject of its own) and ``expired`` (a task sent with ``expires``,
    beat's periodic ones, not run in time; on Redis the worker discards it as revoked).
    Anything else (the ``delivery_limit`` of a message whose workers kept dying) becomes a
    poison dead letter with its reason, replayable like any other. Never rejected here: that
    would dead-letter it back into this queue.
    """
    if reason in _ENDS_THE_BUS_CHOSE:
        log.info("a message RabbitMQ dead-lettered from queue %s (%s), acknowledged: the bus ended it", queue, reason)
    else:
        _dead_letter(
            message,
            f"RabbitMQ dead-lettered it from queue {queue!r} ({reason}): delivered more often than the queue's "
            "x-delivery-limit without being acknowledged",
            None,
            exception_type=f"RabbitMQ.{reason}",
        )
    try:
        message.ack()
    except Exception:
        log.exception("could not acknowledge a message RabbitMQ dead-lettered")


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


def _handle_then_acknowledge(message: Any, celery_default: Callable[..., None], *args: Any) -> None:
    """Run Celery's own handling, then make sure the message is acknowledged, never requeued.

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
