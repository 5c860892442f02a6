"""Poison messages that never reach a task: undecodable, disallowed, of the wrong shape, or for an unknown task.

The worker's consumer (eventbus.delivery.receive) meets these before any task code runs;
the Redis transport (eventbus.fastpath.broker) meets list items that are not even a
kombu message.
This module reads what can safely be read from such a message, to describe it
as a dead letter. It never deserializes anything but JSON: a pickled body is
kept as text, never unpickled.
"""

from __future__ import annotations

import json
import traceback as tb
from typing import Any

from eventbus.deadletters.failure import DeadLetterFailure, Kind, envelope_identity, qualified_name

_JSON_TYPES = ("application/json",)

UNREADABLE_ITEM = "UnreadableBrokerItem"
"""The exception type a dead letter names for a Redis list item that is not a kombu message."""


def failure_from_message(
    message: Any,
    *,
    reason: str,
    exc: BaseException | None = None,
    exception_type: str | None = None,
) -> DeadLetterFailure:
    """Describe a raw broker ``message`` (a kombu Message) as a ``poison`` dead letter.

    ``reason`` is what a person reads; ``exc``, when there is one, gives the
    exception type and traceback. The envelope is kept as JSON when the body
    is JSON and carries one; otherwise the raw body is kept as text.
    """
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_name = _text(headers.get("task"))
    raw_text = _as_text(message.body)
    body = _decode_json(message, raw_text)
    envelope = _envelope_in(body)
    kept = envelope if envelope is not None else body
    event_id, event_type = envelope_identity(envelope)
    delivery_info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    tag = getattr(message, "delivery_tag", None)
    return DeadLetterFailure(
        kind=Kind.POISON,
        queue=_text(delivery_info.get("routing_key")),
        exception_type=exception_type or (qualified_name(type(exc)) if exc is not None else ""),
        exception_message=reason,
        traceback="".join(tb.format_exception(exc)) if exc is not None else "",
        body=kept,
        raw_body=None if kept is not None else raw_text,
        subscriber=_subscriber_named(task_name),
        task_name=task_name,
        task_id=_text(headers.get("id")),
        attempts=0,
        event_id=event_id,
        event_type=event_type,
        # Redis tags each message with a UUID string kept across redeliveries;
        # AMQP's integer tags are per channel and would not identify it.
        message_id=tag if isinstance(tag, str) else "",
    )


def failure_from_raw_item(item: bytes, *, queue: str, reason: str) -> DeadLetterFailure:
    """Describe a Redis list item that is not a kombu message as a ``poison`` dead letter.

    The item is kept as text, whatever it holds (the dead letter caps it);
    when it is JSON with readable task headers, their task name and id are
    noted too, so that two such items make two dead letters.
    """
    raw_text = _as_text(item)
    headers: Any = None
    try:
        parsed = json.loads(raw_text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        headers = parsed.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    task_name = _text(headers.get("task")) if isinstance(headers.get("task"), str) else ""
    return DeadLetterFailure(
        kind=Kind.POISON,
        queue=queue,
        exception_type=UNREADABLE_ITEM,
        exception_message=reason,
        raw_body=raw_text,
        subscriber=_subscriber_named(task_name) if task_name else "",
        task_name=task_name,
        task_id=_text(headers.get("id")) if isinstance(headers.get("id"), str) else "",
    )


def _subscriber_named(task_name: str) -> str:
    from eventbus.contract import registry

    try:
        return registry.get(task_name).name
    except KeyError:
        return ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _as_text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    try:
        raw = bytes(body)
    except TypeError:
        return repr(body)
    # Lossless and readable: invalid UTF-8 (a pickle) shows as \x.. escapes.
    return raw.decode("utf-8", errors="backslashreplace")


def _decode_json(message: Any, raw_text: str) -> Any:
    """The JSON body, or None. Only JSON content is ever decoded here."""
    content_type = (message.content_type or "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        return None
    try:
        return json.loads(raw_text)
    except ValueError:
        return None


def _envelope_in(body: Any) -> dict[str, Any] | None:
    """The event envelope inside a Celery task message body, if there is one.

    Protocol 2 bodies are ``[args, kwargs, embed]``; protocol 1 bodies are a
    dict with ``args``. Our subscribers take the envelope as their one argument.
    """
    args: Any = None
    if isinstance(body, list) and body:
        args = body[0]
    elif isinstance(body, dict) and "args" in body:
        args = body["args"]
    elif isinstance(body, dict) and "type" in body and "payload" in body:
        return body  # a bare envelope published without Celery's framing
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    return None
