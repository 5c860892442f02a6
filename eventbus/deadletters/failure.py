"""What a dead letter says: which message failed, where, how and why.

This module imports no Django model, so the worker's consumer can build a
failure before (or without) touching the database.
"""

from __future__ import annotations

import hashlib
import json
import traceback as tb
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

WIRE_VERSION = 1
"""The version of the JSON message sent to the ``dead_letter`` queue."""

# Fixed forever: dead-letter ids are derived from it, and a redelivered failure
# must map to the id it had before.
_ID_NAMESPACE = uuid.UUID("5d3b1c1e-8f0a-4c1e-9a57-6c0f3e2b7d41")

# A message or traceback is for a person to read; a runaway one (a recursion
# error, a huge repr) must not make the dead letter itself too big to store.
MAX_MESSAGE_CHARS = 5_000
MAX_TRACEBACK_CHARS = 20_000


def body_cap() -> int:
    """``EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES``: the most of a body a dead letter keeps (see ``cap_body``)."""
    from django.conf import settings  # read when a failure is built: settings are configured by then

    return int(settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES)


class Kind(StrEnum):
    """Why a message became a dead letter."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    """A transient failure that outlasted the subscriber's retry policy."""
    PERMANENT = "permanent"
    """A failure that retrying cannot fix (not one of the subscriber's transient exceptions)."""
    POISON = "poison"
    """A message that cannot be processed at all: not JSON, not allowed, unknown task, broken envelope."""
    WORKER_LOST = "worker_lost"
    """The worker process died while handling it, and it is not to be redelivered."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeadLetterFailure:
    """One failed message with its failure, as the consumer or the worker saw it.

    ``body`` is the decoded envelope (a JSON-ready dict) when the message was
    valid JSON; otherwise it is ``None`` and ``raw_body`` holds the bytes as
    text. The failure carries the envelope only, which never holds secrets.
    """

    kind: Kind
    queue: str
    """The queue the message was taken from (its routing key)."""
    exception_type: str
    exception_message: str
    traceback: str = ""
    body: Any = None
    raw_body: str | None = None
    subscriber: str = ""
    """The subscriber's name, blank when no subscriber could be told (an unknown task)."""
    task_name: str = ""
    task_id: str = ""
    attempts: int = 0
    """How many times the task ran; 0 for a message that never reached a task."""
    first_failed_at: datetime | None = None
    last_failed_at: datetime = field(default_factory=_now)
    event_id: uuid.UUID | None = None
    event_type: str = ""
    message_id: str = ""
    """A broker-level id for messages without a task id (Redis' delivery tag), so a redelivery maps to one row."""
    body_length: int | None = None
    """Set when the body was cut (``cap_body``): the whole body's length in bytes; ``raw_body`` is its preview."""
    body_sha256: str = ""
    """Set when the body was cut: the sha256 (hex) of the whole body, to match it against a copy kept elsewhere."""

    def __post_init__(self) -> None:
        # Normalize in place (frozen dataclass: object.__setattr__), so that every
        # way in (consumer, worker, wire) yields the same values and the same id.
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "exception_message", _tail(str(self.exception_message), MAX_MESSAGE_CHARS))
        object.__setattr__(self, "traceback", _tail(str(self.traceback), MAX_TRACEBACK_CHARS))
        if self.event_id is not None and not isinstance(self.event_id, uuid.UUID):
            object.__setattr__(self, "event_id", _uuid_or_none(self.event_id))
        if not _is_json(self.body):
            # Never lose the message because its body is not JSON-ready: keep its repr.
            object.__setattr__(self, "raw_body", self.raw_body if self.raw_body is not None else repr(self.body))
            object.__setattr__(self, "body", None)
        if self.body_length is None:
            cut = cap_body(self.body, self.raw_body, body_cap())
            if cut is not None:
                object.__setattr__(self, "body", None)
                object.__setattr__(self, "raw_body", cut.preview)
                object.__setattr__(self, "body_length", cut.length)
                object.__setattr__(self, "body_sha256", cut.sha256)

    @property
    def body_truncated(self) -> bool:
        return self.body_length is not None

    @property
    def id(self) -> uuid.UUID:
        """Deterministic: the same failed delivery always yields the same id, so storing it twice stores one row."""
        if self.task_id:
            key = f"task:{self.task_id}|attempts:{self.attempts}"
        elif self.message_id:
            key = f"message:{self.message_id}"
        elif self.body_sha256:
            # A cut body: the hash of the whole, so that the same message maps to one row.
            key = f"queue:{self.queue}|body:{self.body_sha256}"
        else:
            # No id at all (a bare message): identical bodies on one queue are one dead letter.
            content = json.dumps(self.body, sort_keys=True) if self.body is not None else (self.raw_body or "")
            key = f"queue:{self.queue}|body:{hashlib.sha256(content.encode()).hexdigest()}"
        return uuid.uuid5(_ID_NAMESPACE, f"{self.kind.value}|{key}")

    @property
    def reason(self) -> str:
        return f"{self.exception_type}: {self.exception_message}" if self.exception_type else self.exception_message

    @classmethod
    def from_exception(
        cls,
        kind: Kind | str,
        exc: BaseException,
        *,
        queue: str,
        body: Any = None,
        raw_body: str | None = None,
        subscriber: str = "",
        task_name: str = "",
        task_id: str = "",
        attempts: int = 0,
        first_failed_at: datetime | None = None,
        last_failed_at: datetime | None = None,
        message_id: str = "",
    ) -> DeadLetterFailure:
        """Build a failure from an exception, taking its type, message and traceback.

        The event id and type are read from ``body`` when it looks like an
        envelope; a broken envelope leaves them blank instead of failing.
        """
        event_id, event_type = envelope_identity(body)
        return cls(
            kind=Kind(kind),
            queue=queue,
            exception_type=qualified_name(type(exc)),
            exception_message=str(exc),
            traceback="".join(tb.format_exception(exc)),
            body=body,
            raw_body=raw_body,
            subscriber=subscriber,
            task_name=task_name,
            task_id=task_id,
            attempts=attempts,
            first_failed_at=first_failed_at,
            last_failed_at=last_failed_at or _now(),
            event_id=event_id,
            event_type=event_type,
            message_id=message_id,
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready message sent to the ``dead_letter`` queue."""
        return {
            "v": WIRE_VERSION,
            "id": str(self.id),
            "kind": self.kind.value,
            "queue": self.queue,
            "exception_type": self.exception_type,
            "exception_message": self.exception_message,
            "traceback": self.traceback,
            "body": self.body,
            "raw_body": self.raw_body,
            "subscriber": self.subscriber,
            "task_name": self.task_name,
            "task_id": self.task_id,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at.isoformat() if self.first_failed_at else None,
            "last_failed_at": self.last_failed_at.isoformat(),
            "event_id": str(self.event_id) if self.event_id else None,
            "event_type": self.event_type,
            "message_id": self.message_id,
            "body_length": self.body_length,
            "body_sha256": self.body_sha256,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> DeadLetterFailure:
        """Read :meth:`to_wire`'s form back; raises ValueError or KeyError on a malformed one."""
        if wire.get("v") != WIRE_VERSION:
            raise ValueError(f"unsupported dead-letter message version {wire.get('v')!r}")
        failure = cls(
            kind=Kind(wire["kind"]),
            queue=wire["queue"],
            exception_type=wire["exception_type"],
            exception_message=wire["exception_message"],
            traceback=wire.get("traceback") or "",
            body=wire.get("body"),
            raw_body=wire.get("raw_body"),
            subscriber=wire.get("subscriber") or "",
            task_name=wire.get("task_name") or "",
            task_id=wire.get("task_id") or "",
            attempts=int(wire.get("attempts") or 0),
            first_failed_at=datetime.fromisoformat(wire["first_failed_at"]) if wire.get("first_failed_at") else None,
            last_failed_at=datetime.fromisoformat(wire["last_failed_at"]),
            event_id=_uuid_or_none(wire.get("event_id")),
            event_type=wire.get("event_type") or "",
            message_id=wire.get("message_id") or "",
            body_length=int(wire["body_length"]) if wire.get("body_length") is not None else None,
            body_sha256=wire.get("body_sha256") or "",
        )
        if str(failure.id) != wire["id"]:
            # The id is derived from the fields: a mismatch means the message was altered.
            raise ValueError(f"dead-letter message id {wire['id']} does not match its content ({failure.id})")
        return failure


@dataclass(frozen=True)
class CutBody:
    """A body too big to keep whole: its first bytes, its whole length and the hash of the whole."""

    preview: str
    length: int
    sha256: str


def cap_body(body: Any, raw_body: str | None, limit: int) -> CutBody | None:
    """``None`` when the body fits in ``limit`` bytes; otherwise what a dead letter keeps of it.

    The body is measured as the text a dead letter would store: the JSON text
    of a JSON body (``json.dumps``, compact), or the raw body's text (invalid
    UTF-8 already shown as ``\\x..`` escapes), in UTF-8. A dead letter of a
    20 MB message would otherwise be stored, sent through the ``dead_letter``
    queue and rendered on the ops page whole. The preview is the first
    ``limit`` bytes of that text, cut on a character boundary.
    """
    if body is None and raw_body is None:
        return None
    text = json.dumps(body, separators=(",", ":")) if body is not None else raw_body or ""
    if len(text) * 4 <= limit:
        return None  # cannot exceed the limit even at four UTF-8 bytes per character: no encoding needed
    whole = text.encode("utf-8", errors="backslashreplace")
    if len(whole) <= limit:
        return None
    preview = whole[:limit].decode("utf-8", errors="ignore")
    return CutBody(preview=preview, length=len(whole), sha256=hashlib.sha256(whole).hexdigest())


def envelope_identity(body: Any) -> tuple[uuid.UUID | None, str]:
    """The event id and type of an envelope-shaped ``body``, as far as they can be read."""
    if not isinstance(body, dict):
        return None, ""
    event_type = body.get("type")
    return _uuid_or_none(body.get("id")), event_type if isinstance(event_type, str) else ""


def qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _tail(text: str, limit: int) -> str:
    # Keep the end: the innermost frame and the final message are what explain a failure.
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]
