"""Log records with their context: one JSON object per line in production, readable lines in development.

Wired in ``settings.LOGGING`` for the web process, and through Celery's
``setup_logging`` signal (project/celery.py) for workers and beat:

- ``ContextFilter`` copies the context fields of eventbus/observability/context.py
  (correlation id, event id and type, subscriber, task id and name) onto every
  record, empty when unset.
- ``RedactFilter`` masks signed tokens (the email verification link, signed
  cookies) in messages and tracebacks before any formatter sees them.
- ``JsonFormatter`` writes one JSON object per line; ``TextFormatter`` a line
  for people, with ``[req=… event=… sub=… task=…]`` when those are set.
- ``DisallowedHostFilter`` turns Django's report of a bad ``Host`` header (an
  ERROR with a traceback) into one WARNING line with the host and the path.
- ``HousekeepingFilter`` logs beat's frequent housekeeping runs (the relay
  every 5 s, the broker watch) at DEBUG: Celery's "received", "succeeded"
  and beat's "Sending due task" lines for them no longer bury the
  application's own. Their warnings and errors stay as they are.

This module is named like the standard library's ``logging``; absolute
imports (the default) keep the two apart.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from eventbus.observability import context

#: The record attributes ContextFilter sets, in the order the formatters write them.
CONTEXT_FIELDS: tuple[str, ...] = context.FIELDS

#: Short names of the text formatter's suffix, in order; other fields appear only in JSON.
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("req", "correlation_id"),
    ("event", "event_id"),
    ("sub", "subscriber"),
    ("task", "task_id"),
)

#: A value made by ``django.core.signing`` (``payload:timestamp:signature``, the
#: payload base64 with a leading dot when compressed). The verification link's
#: token is one; whoever holds it can verify the address, so it never reaches a log.
SIGNED_VALUE = r"\.?[A-Za-z0-9_-]{4,}(?::|%3A)[0-9A-Za-z]{4,10}(?::|%3A)[A-Za-z0-9_-]{27,}"
REDACTED = "[redacted]"


def utc_iso(timestamp: float) -> str:
    """``2025-01-31T12:00:00.123Z``: UTC, ISO 8601, milliseconds."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    """The record's context fields: those ContextFilter set, or else the current context."""
    if all(hasattr(record, name) for name in CONTEXT_FIELDS):
        return {name: str(getattr(record, name)) for name in CONTEXT_FIELDS if getattr(record, name)}
    return context.current()


class ContextFilter(logging.Filter):
    """Copy the context fields onto every record (``""`` when unset); never drops a record.

    A field passed explicitly (``extra={"event_id": ...}``) wins. Two lines are
    logged outside the context that concerns them, and get it from the record:

    - ``django.request`` logs 4xx/5xx responses after the middleware returned;
      the request it attaches carries the correlation id.
    - Celery's "Task ...[id] received" is logged by the worker's main process
      before the task runs; its ``data`` holds the task id and name.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        values = context.current()
        fields = {name: getattr(record, name, None) or values.get(name, "") for name in CONTEXT_FIELDS}
        if not fields["correlation_id"]:
            request_id = getattr(getattr(record, "request", None), "correlation_id", None)
            if isinstance(request_id, str):
                fields["correlation_id"] = request_id
        data = getattr(record, "data", None)
        if not fields["task_id"] and record.name.startswith("celery.") and isinstance(data, Mapping):
            if isinstance(data.get("id"), str):
                fields["task_id"] = data["id"]
            if not fields["task_name"] and isinstance(data.get("name"), str):
                fields["task_name"] = data["name"]
        for name, value in fields.items():
            setattr(record, name, value)
        return True


class RedactFilter(logging.Filter):
    """Replace secrets in a record's message and traceback with ``[redacted]``; never drops a record.

    ``patterns`` (regular expressions) are added to the built-in one, which
    matches values signed by ``django.core.signing``. It changes the record
    itself, so every handler after it sees the redacted text.
    """

    def __init__(self, name: str = "", patterns: Iterable[str] = ()) -> None:
        super().__init__(name)
        self.pattern = re.compile("|".join(f"(?:{p})" for p in (SIGNED_VALUE, *patterns)))

    def redact(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: format the traceback once, redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors.

    Keys: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``message``, ``process`` (the process name: ``MainProcess``,
    ``ForkPoolWorker-1``), then each context field that is set, then
    ``exc_info`` and ``stack_info`` as strings when there are any. Nothing else
    from the record is written: ``extra`` data (Celery passes task arguments
    that way) stays out of the log.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        entry.update(_context_of(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """A line for people: ``time LEVEL process logger: message [req=… event=… sub=… task=…]``.

    The bracket lists only the fields that are set, and is left out when none is.
    """

    default_format = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or self.default_format, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        values = _context_of(record)
        tags = " ".join(f"{short}={values[name]}" for short, name in _TEXT_FIELDS if values.get(name))
        line = super().formatMessage(record)
        return f"{line} [{tags}]" if tags else line


#: The longest host and path a bad-Host line repeats; the rest is counted, not written.
#: Enough for any real host name (253) and a readable path; a scanner's 8 KB header is not.
BAD_HOST_MAX = 255
BAD_PATH_MAX = 200


def _printable(text: str, limit: int) -> str:
    """``text`` with anything but printable ASCII escaped (``\\x1b``), cut to ``limit`` characters."""
    escaped = text.encode("unicode_escape").decode("ascii")
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}... ({len(escaped)} characters)"


class DisallowedHostFilter(logging.Filter):
    """One WARNING line per request with a ``Host`` that ALLOWED_HOSTS does not list; never drops a record.

    Django logs each one on ``django.security.DisallowedHost`` at ERROR, with the
    exception's traceback (some 15 lines): noise that scanners trigger all day,
    and nothing the operator can fix in the code. The line says which host and
    which path, escaped and cut (the header is the client's to fill), and the
    path's signed token, if any, masked before it is cut (so no part of it is
    written). Installed on that logger in ``settings.LOGGING``.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.redact = RedactFilter().redact

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        meta = getattr(request, "META", None)
        if not isinstance(meta, Mapping):
            return True  # not a request's record: leave it as Django wrote it
        host = str(meta.get("HTTP_HOST") or meta.get("SERVER_NAME") or "")
        path = self.redact(str(getattr(request, "path", "")))
        record.msg = "refused a request for host %s (not in DJANGO_ALLOWED_HOSTS): %s"
        record.args = (_printable(host, BAD_HOST_MAX), _printable(path, BAD_PATH_MAX))
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


#: Beat's frequent housekeeping tasks (settings.CELERY_BEAT_SCHEDULE): every few seconds, nearly always with
#: nothing to do. What they do when they do something (events relayed, a broker loss) they log themselves.
HOUSEKEEPING_TASKS = frozenset({"eventbus.relay_outbox", "eventbus.watch_broker", "eventbus.reconcile_deliveries"})


def _task_name(record: logging.LogRecord) -> str:
    """The task a Celery record is about: in its format arguments (a mapping), its ``data``, or beat's arguments."""
    for source in (record.args, getattr(record, "data", None)):
        if isinstance(source, Mapping) and isinstance(source.get("name"), str):
            return str(source["name"])
    if isinstance(record.args, tuple) and len(record.args) == 2 and isinstance(record.args[1], str):
        return record.args[1]  # celery.beat: "Scheduler: Sending due task %s (%s)", entry name and task
    return ""


class HousekeepingFilter(logging.Filter):
    """Lower the INFO lines about HOUSEKEEPING_TASKS to DEBUG (dropping them unless the logger logs DEBUG).

    Installed in ``settings.LOGGING`` on the loggers that write them: ``celery.worker.strategy`` ("Task …
    received"), ``celery.app.trace`` ("Task … succeeded in …") and ``celery.beat`` ("Sending due task …").
    A filter on a logger sees only that logger's own records, after its level check, so it decides
    itself whether the lowered record is still wanted. ``LOG_LEVEL=DEBUG`` shows them all again.
    """

    def __init__(self, name: str = "", tasks: Iterable[str] = HOUSEKEEPING_TASKS) -> None:
        super().__init__(name)
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _task_name(record) not in self.tasks:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
