"""The correlation id across Celery: into every task's headers when published, back into the context when run.

Three signal handlers, connected by ``connect()`` (eventbus/signals.py):

- ``before_task_publish`` (the web process, workers, beat): puts the
  correlation id into the message's ``x_correlation_id`` header. It is the
  envelope's when the task carries an event (so an event the relay sends
  later keeps its request's id), else the current context's, else a fresh one
  -- which is what beat's periodic tasks get: a new id per run. An event's
  task is logged as sent, with its event, subscriber and task id; so is a
  task that got a fresh id, which makes beat's log show each run's id.
- ``task_prerun`` (workers): binds the context (eventbus/observability/context.py) for the
  task's run: correlation id from the header, task id and name, and for an
  event's task the event id and type and the subscriber. Every log line of
  the run carries them, Celery's own "Task ... succeeded" included.
- ``task_postrun``: restores the context as it was before the run.

Why not a header named ``correlation_id``: Celery uses that name for the AMQP
message property that holds the task id, and the worker's task request takes
the property over a header of the same name (celery/worker/request.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from celery import current_app
from celery.signals import before_task_publish, task_postrun, task_prerun

from eventbus.observability import context

log = logging.getLogger(__name__)

#: The message header (protocol 2) that carries the correlation id; read back as
#: ``task.request.get(HEADER)`` in the worker.
HEADER = "x_correlation_id"

# Values taken from a message are echoed into logs: accept plain tokens only
# (the middleware's rule for X-Request-ID, plus ':' for ids of other systems).
_SAFE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

# Where task_prerun leaves what task_postrun must restore: on the task's request
# object, which lives exactly as long as one run.
_BOUND_ATTR = "_eventbus_tracing_bound"


def safe(value: object) -> str | None:
    """``value`` if it is a plain token that may go into a log line, else None."""
    return value if isinstance(value, str) and _SAFE.match(value) else None


def envelope_in(args: object) -> Mapping[str, Any] | None:
    """The event envelope among a task's positional arguments (the wire form), if there is one."""
    if not isinstance(args, Sequence) or isinstance(args, str | bytes):
        return None
    for arg in args:
        if isinstance(arg, Mapping) and {"id", "type", "correlation_id", "payload"} <= arg.keys():
            return arg
    return None


def _args_of(body: object) -> object:
    """The positional arguments in a task message body: protocol 2's ``(args, kwargs, embed)``, or protocol 1's dict."""
    if isinstance(body, Mapping):
        return body.get("args")
    if isinstance(body, Sequence) and not isinstance(body, str | bytes) and body:
        return body[0]
    return None


def _subscriber_of(task: Any) -> str | None:
    """The subscriber a task delivers to (eventbus.delivery.consumer.ConsumerTask), or None for other tasks."""
    return safe(getattr(task, "subscription_name", None))


def add_correlation_header(
    sender: str | None = None, body: object = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """``before_task_publish``: give the message its correlation id header.

    Logs an event's task (with the event, subscriber and task id), so that the
    sender's log names the task ids the workers' lines will carry; and a task
    sent outside any request or task (beat's periodic tasks), whose id is made
    here, so that each run's id shows in beat's log. Other tasks go unlogged.
    """
    if headers is None:
        return
    envelope = envelope_in(_args_of(body))
    correlation_id = (
        safe(headers.get(HEADER))
        or (safe(envelope.get("correlation_id")) if envelope is not None else None)
        or context.get_correlation_id()
    )
    fresh = correlation_id is None
    if correlation_id is None:
        correlation_id = context.new_correlation_id()
    headers[HEADER] = correlation_id
    if (envelope is None and not fresh) or not log.isEnabledFor(logging.INFO):
        # Nothing to log (LOG_LEVEL above INFO): binding six context fields for a line nobody
        # writes cost every sent message that much, twice per sign-up.
        return
    task_id = safe(headers.get("id"))
    task_name = safe(sender)
    if envelope is None:
        with context.bind(correlation_id=correlation_id, task_id=task_id, task_name=task_name):
            log.info("task %s[%s] sent with a new correlation id", task_name, task_id)
        return
    event_id, event_type = safe(envelope.get("id")), safe(envelope.get("type"))
    subscriber = _subscriber_of(current_app.tasks.get(sender)) if sender else None
    with context.bind(
        correlation_id=correlation_id,
        event_id=event_id,
        event_type=event_type,
        subscriber=subscriber,
        task_id=task_id,
        task_name=task_name,
    ):
        log.info("event %s (%s) sent to %s as task %s", event_id, event_type, subscriber or task_name, task_id)


def bind_task_context(task_id: str | None = None, task: Any = None, args: object = None, **_: Any) -> None:
    """``task_prerun``: bind the run's context; ``task_postrun`` restores it."""
    if task is None:
        return
    request = task.request
    envelope = envelope_in(args)
    correlation_id = (
        # A real worker puts message headers on the request itself; apply() keeps them in .headers.
        safe(request.get(HEADER))
        or safe((request.get("headers") or {}).get(HEADER))
        or (safe(envelope.get("correlation_id")) if envelope is not None else None)
        or context.get_correlation_id()
        or context.new_correlation_id()
    )
    bound = context.set_fields(
        correlation_id=correlation_id,
        event_id=safe(envelope.get("id")) if envelope is not None else None,
        event_type=safe(envelope.get("type")) if envelope is not None else None,
        subscriber=_subscriber_of(task),
        task_id=safe(task_id or request.id),
        task_name=safe(task.name),
    )
    setattr(request, _BOUND_ATTR, bound)


def unbind_task_context(task: Any = None, **_: Any) -> None:
    """``task_postrun``: restore the context ``bind_task_context`` changed."""
    if task is None:
        return
    bound = getattr(task.request, _BOUND_ATTR, None)
    if bound is not None:
        delattr(task.request, _BOUND_ATTR)
        context.reset_fields(bound)


def connect() -> None:
    """Connect the three handlers (idempotent: each has a dispatch_uid)."""
    before_task_publish.connect(
        add_correlation_header, weak=False, dispatch_uid="eventbus.observability.tracing.publish"
    )
    task_prerun.connect(bind_task_context, weak=False, dispatch_uid="eventbus.observability.tracing.prerun")
    task_postrun.connect(unbind_task_context, weak=False, dispatch_uid="eventbus.observability.tracing.postrun")
