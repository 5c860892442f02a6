"""What a message must look like before the worker reads it: the checks that keep any shape survivable.

A worker reads every message in its one main process before a task runs:
kombu turns a Redis list item into a message (``FailFastChannel``,
eventbus/fastpath/broker.py), then Celery's ``on_task_received``
(celery/worker/consumer/consumer.py) hands it to the task's strategy
(celery/worker/strategy.py builds a ``Request``; the batching strategy,
eventbus/delivery/batch.py, an ``Item``). Both unpack the body as
``args, kwargs, embed = payload`` and read headers by key. Celery catches a
few errors on that path (an undecodable body, a disallowed content type, an
unknown task, a bad ETA); a body like ``{"a": 1}`` raises ``ValueError``
instead, nothing catches it, and the worker stops with the message still
unacknowledged, to stop the next worker in turn.

So each message is checked first, here, and one that fails goes to the dead
letters with the reason these functions give. Each returns that reason, or
``None`` when the message may go on (including when Celery's own handling
already takes it off the queue as a dead letter: not JSON, not allowed, an
unknown task, no task name at all).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.utils.encoding import str_to_bytes

# The body encodings kombu's virtual channel can decode (kombu.transport.virtual.Channel.codecs), and none.
_BODY_ENCODINGS = (None, "", "utf-8", "base64")


def task_message_problem(message: Any, tasks: Mapping[str, Any], max_bytes: int) -> str | None:
    """What makes ``message`` (a kombu message) unfit to hand to a task's strategy, or None.

    Checks, in the worker's main process and before any strategy sees it: the
    size; the body's shape (protocol 2 ``[args, kwargs, embed]``, or a dict
    with ``args`` for protocol 1 and Celery's hybrid form); the types of the
    task name, id, retries and time limits; and that the arguments fit the
    task's signature (Celery's own ``__header__``, which ``apply_async``
    checks on the sending side).
    """
    body = message.body or b""
    size = len(body) if isinstance(body, bytes | bytearray | memoryview) else len(str(body).encode())
    if size > max_bytes:
        return f"the body is {size} bytes, over the {max_bytes} a message may have (EVENTBUS_MAX_MESSAGE_BYTES)"
    headers = message.headers
    if not isinstance(headers, dict):
        return None  # Celery: not a task message (on_unknown_message)
    if "task" in headers:
        fields: Mapping[str, Any] = headers
    else:
        payload = _payload(message)
        if not isinstance(payload, dict) or "task" not in payload:
            return None  # Celery: not a task message (on_unknown_message), or a body it cannot decode
        fields = payload  # protocol 1: everything in the body
    name = fields.get("task")
    if not isinstance(name, str):
        return f"the task name is {_describe(name)}, not a string"
    task = tasks.get(name)
    if task is None:
        return None  # Celery: an unknown task (on_unknown_task)
    problem = _fields_problem(fields)
    if problem is not None:
        return problem
    payload = _payload(message)
    if payload is _UNREADABLE:
        return None  # Celery meets the same error and dead-letters the message with it
    if fields is not headers:
        args, kwargs, embed = payload.get("args", ()), payload.get("kwargs", {}), None
    elif isinstance(payload, dict) and "args" in payload:
        args, kwargs, embed = payload["args"], payload.get("kwargs", {}), None  # Celery's hybrid form
    elif isinstance(payload, list | tuple) and len(payload) == 3:
        args, kwargs, embed = payload
    else:
        return f"the body is not a task message's [args, kwargs, embed]: {_describe(payload)}"
    return _arguments_problem(name, task, args, kwargs, embed)


_UNREADABLE = object()


def _payload(message: Any) -> Any:
    """The decoded body, or ``_UNREADABLE`` when it cannot be decoded or is not allowed."""
    try:
        return message.payload
    except (DecodeError, ContentDisallowed):
        return _UNREADABLE


def _fields_problem(fields: Mapping[str, Any]) -> str | None:
    task_id = fields.get("id")
    if not isinstance(task_id, str) or not task_id:
        return f"the task id is {_describe(task_id)}, not a non-empty string"
    retries = fields.get("retries")
    if retries is not None and not _is_count(retries):
        return f"retries is {_describe(retries)}, not a whole number of zero or more"
    timelimit = fields.get("timelimit")
    if timelimit is not None and not _is_time_limits(timelimit):
        return f"timelimit is {_describe(timelimit)}, not [hard, soft] seconds"
    return None


def _arguments_problem(name: str, task: Any, args: Any, kwargs: Any, embed: Any) -> str | None:
    if not isinstance(args, list | tuple):
        return f"the task's args are {_describe(args)}, not a list"
    if not isinstance(kwargs, dict):
        return f"the task's kwargs are {_describe(kwargs)}, not an object"
    if embed is not None and not isinstance(embed, dict):
        return f"the message's embed (callbacks, chain, chord) is {_describe(embed)}, not an object"
    header = getattr(task, "__header__", None)
    if header is not None:
        try:
            header(*args, **kwargs)
        except TypeError as exc:
            return f"the arguments do not fit {name}: {exc}"
    return None


def redis_item_problem(item: Any) -> str | None:
    """What makes a decoded Redis list item unfit to be a kombu message, or None.

    kombu's virtual channel builds a message from the item by key
    (``Message.__init__``: ``properties``, its ``delivery_tag`` and
    ``delivery_info``, the ``body`` decoded by its ``body_encoding``) and
    records it as unacknowledged by its exchange and routing key: each of
    these, missing or of another type, would raise in the worker's main process.
    """
    if not isinstance(item, dict):
        return f"not a kombu message: the item is {_describe(item)}, not an object"
    properties = item.get("properties")
    if not isinstance(properties, dict):
        return f"not a kombu message: properties is {_describe(properties)}, not an object"
    if not isinstance(properties.get("delivery_tag"), str):
        return "not a kombu message: no delivery_tag string in its properties"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not isinstance(info.get("exchange"), str):
        return "not a kombu message: no delivery_info with an exchange string in its properties"
    if not isinstance(info.get("routing_key"), str):
        return "not a kombu message: no routing_key string in its delivery_info"
    for key in ("content-type", "content-encoding"):
        if item.get(key) is not None and not isinstance(item[key], str):
            return f"not a kombu message: {key} is {_describe(item[key])}, not a string"
    if item.get("headers") is not None and not isinstance(item["headers"], dict):
        return f"not a kombu message: headers is {_describe(item['headers'])}, not an object"
    body, encoding = item.get("body"), properties.get("body_encoding")
    if body is not None and not isinstance(body, str):
        return f"not a kombu message: its body is {_describe(body)}, not a string"
    if encoding not in _BODY_ENCODINGS:
        return f"not a kombu message: unknown body_encoding {encoding!r}"
    if encoding == "base64" and body:
        try:
            base64.b64decode(str_to_bytes(body))  # what kombu's Base64 codec will do with it
        except (binascii.Error, ValueError) as exc:
            return f"not a kombu message: its base64 body does not decode: {exc}"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_time_limits(value: Any) -> bool:
    def seconds(limit: Any) -> bool:
        return limit is None or (isinstance(limit, int | float) and not isinstance(limit, bool) and limit >= 0)

    return isinstance(value, list | tuple) and len(value) == 2 and all(seconds(limit) for limit in value)


def _describe(value: Any) -> str:
    """A short description of a value for a reason: its type and, for a container, its size."""
    kind = "null" if value is None else type(value).__name__
    if isinstance(value, list | tuple | dict | str):
        return f"{kind} of {len(value)}"
    return kind
