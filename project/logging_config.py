"""``settings.LOGGING``: which filters, formatter and levels each logger gets.

The same configuration serves the web process, and workers and beat through
Celery's setup_logging signal (project/celery.py). On every line: the request's
correlation id, and the event id and type, subscriber and task id where they
apply. The filters and formatters themselves are in project/logging.py.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

LOG_FORMATS = ("json", "text")
""""json": one JSON object per line, for a log collector; "text": readable lines."""


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """The dictConfig for ``level`` (LOG_LEVEL) and ``log_format`` (LOG_FORMAT), which must be json or text."""
    if log_format not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {log_format!r}.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "project.logging.ContextFilter"},
            # Signed tokens (the verification link's) never reach a log, not even in an access log line.
            "redact": {"()": "project.logging.RedactFilter"},
            "disallowed_host": {"()": "project.logging.DisallowedHostFilter"},
            "housekeeping": {"()": "project.logging.HousekeepingFilter"},
        },
        "formatters": {
            "json": {"()": "project.logging.JsonFormatter"},
            "text": {"()": "project.logging.TextFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["redact", "context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"level": "INFO"},
            # runserver's access log has a handler of its own in Django's defaults: use ours,
            # so that its lines are JSON too and the verification link's token is redacted.
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "celery": {"level": level},
            # The dev SMTP sink (aiosmtpd) logs every SMTP command with its addresses at
            # INFO, and every line of a message (the verification link) at DEBUG.
            "mail.log": {"level": "WARNING"},
            # A request with a Host not in ALLOWED_HOSTS: one WARNING line, not a traceback.
            "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
            # Beat's relay and broker watch every few seconds: their routine lines at DEBUG (project/logging.py).
            **{
                name: {"filters": ["housekeeping"]}
                for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat")
            },
        },
    }
