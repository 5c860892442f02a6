"""Log lines and their context: the filters, both formatters, and LOGGING as the settings build it."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from eventbus.observability import context
from project.logging import REDACTED, ContextFilter, JsonFormatter, RedactFilter, TextFormatter
from signups.verification import make_token
from tests.conftest import REPO

UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str = "hello %s", *args: object, name: str = "eventbus.test", **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, message, args or ("world",), None)
    rec.__dict__.update(extra)
    return rec


def filtered(rec: logging.LogRecord) -> logging.LogRecord:
    assert ContextFilter().filter(rec) is True
    return rec


def failing_record() -> logging.LogRecord:
    try:
        raise ValueError("it broke")
    except ValueError:
        return logging.LogRecord("eventbus.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())


# --- the context ---------------------------------------------------------------


def test_bind_sets_fields_for_its_block_and_restores_the_outer_ones() -> None:
    with context.bind(correlation_id="req-1", event_id="e-1"):
        with context.bind(event_id="e-2", subscriber="sub", task_id=None):
            assert context.current() == {"correlation_id": "req-1", "event_id": "e-2", "subscriber": "sub"}
        assert context.current() == {"correlation_id": "req-1", "event_id": "e-1"}
        assert context.get_correlation_id() == "req-1"
    assert context.current() == {}


def test_bind_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="unknown context fields"), context.bind(request_id="x"):
        pass


# --- ContextFilter ---------------------------------------------------------------


def test_the_filter_sets_every_field_empty_when_nothing_is_bound() -> None:
    rec = filtered(record())
    assert [getattr(rec, name) for name in context.FIELDS] == [""] * len(context.FIELDS)


def test_the_filter_copies_the_bound_fields() -> None:
    with context.bind(
        correlation_id="req-1", event_id="e-1", event_type="user.signed_up", subscriber="sub", task_id="t-1"
    ):
        rec = filtered(record())
    assert (rec.correlation_id, rec.event_id, rec.event_type, rec.subscriber, rec.task_id, rec.task_name) == (
        "req-1",
        "e-1",
        "user.signed_up",
        "sub",
        "t-1",
        "",
    )


def test_a_field_passed_as_extra_wins_over_the_context() -> None:
    with context.bind(correlation_id="req-1", event_id="e-1"):
        rec = filtered(record(event_id="e-explicit"))
    assert (rec.correlation_id, rec.event_id) == ("req-1", "e-explicit")


def test_djangos_request_log_after_the_middleware_returned_gets_the_requests_id() -> None:
    # django.request logs a 4xx/5xx outside the middleware, with the request attached
    rec = filtered(record(name="django.request", request=SimpleNamespace(correlation_id="req-9")))
    assert rec.correlation_id == "req-9"


def test_celerys_received_line_gets_the_task_id_from_its_data() -> None:
    data = {"id": "t-7", "name": "analytics.record_event", "args": "(...)"}
    rec = filtered(record("Task %(name)s[%(id)s] received", data, name="celery.worker.strategy", data=data))
    assert (rec.task_id, rec.task_name) == ("t-7", "analytics.record_event")
    # other loggers' "data" means nothing to it
    assert filtered(record(name="eventbus.test", data=data)).task_id == ""


# --- RedactFilter ----------------------------------------------------------------


def test_a_verification_token_is_redacted_from_message_and_arguments() -> None:
    token = make_token(42, "ann@example.com")
    rec = record('"GET /signup/verify/%s/ HTTP/1.1" 200 512', token, name="django.server")

    assert RedactFilter().filter(rec) is True

    assert rec.getMessage() == f'"GET /signup/verify/{REDACTED}/ HTTP/1.1" 200 512'
    assert token not in JsonFormatter().format(rec)


def test_a_url_encoded_token_and_one_in_a_traceback_are_redacted() -> None:
    token = make_token(42, "ann@example.com")
    rec = record("link %s", token.replace(":", "%3A"))
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        rec.exc_info = sys.exc_info()

    RedactFilter().filter(rec)

    assert token.replace(":", "%3A") not in rec.getMessage()
    assert token not in TextFormatter().format(rec)
    assert "ValueError: bad token [redacted]" in TextFormatter().format(rec)


def test_redaction_leaves_ordinary_lines_alone_and_takes_extra_patterns() -> None:
    ordinary = "event 0b7e5f1c-8d2a-4a43-9a0e-0c6f7f0a1b2c sent at 12:30:45 to analytics.record_event"
    rec = record("%s", ordinary)
    RedactFilter().filter(rec)
    assert rec.getMessage() == ordinary

    rec = record("card %s", "4111-1111")
    RedactFilter(patterns=[r"\d{4}-\d{4}"]).filter(rec)
    assert rec.getMessage() == f"card {REDACTED}"


# --- JsonFormatter ---------------------------------------------------------------


def test_json_is_one_object_per_line_with_the_fixed_keys() -> None:
    line = JsonFormatter().format(filtered(record("multi\nline %s", "wörld")))

    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "process"}
    assert UTC_ISO.match(entry["time"])
    assert (entry["level"], entry["logger"], entry["message"]) == ("INFO", "eventbus.test", "multi\nline wörld")
    assert entry["process"] == "MainProcess"


def test_json_carries_the_context_fields_that_are_set() -> None:
    with context.bind(correlation_id="req-1", subscriber="sub", task_id="t-1", task_name="a.task"):
        entry = json.loads(JsonFormatter().format(filtered(record())))
    assert {k: entry[k] for k in ("correlation_id", "subscriber", "task_id", "task_name")} == {
        "correlation_id": "req-1",
        "subscriber": "sub",
        "task_id": "t-1",
        "task_name": "a.task",
    }
    assert "event_id" not in entry and "event_type" not in entry


def test_json_writes_the_traceback_as_a_string() -> None:
    entry = json.loads(JsonFormatter().format(filtered(failing_record())))
    assert entry["level"] == "ERROR"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: it broke")


def test_json_leaves_extra_data_out() -> None:
    # Celery passes a task's arguments as extra "data"; they stay out of the log.
    data = {"id": "t-1", "name": "a.task", "args": "('secret argument',)"}
    line = JsonFormatter().format(filtered(record("Task %(id)s", data, name="celery.worker.strategy", data=data)))
    assert "secret argument" not in line


def test_json_reads_the_context_itself_when_the_filter_did_not_run() -> None:
    with context.bind(correlation_id="req-2"):
        entry = json.loads(JsonFormatter().format(record()))
    assert entry["correlation_id"] == "req-2"


# --- TextFormatter ---------------------------------------------------------------


def test_text_has_no_brackets_when_nothing_is_bound() -> None:
    line = TextFormatter().format(filtered(record()))
    assert re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO MainProcess eventbus.test: hello world$", line), line


def test_text_appends_the_fields_that_are_set_in_a_fixed_order() -> None:
    with context.bind(task_id="t-1", correlation_id="req-1", event_type="user.signed_up"):
        partial = TextFormatter().format(filtered(record()))
        with context.bind(event_id="e-1", subscriber="sub"):
            full = TextFormatter().format(filtered(record()))
    assert partial.endswith("hello world [req=req-1 task=t-1]")
    assert full.endswith("hello world [req=req-1 event=e-1 sub=sub task=t-1]")


def test_text_puts_the_fields_on_the_first_line_before_the_traceback() -> None:
    with context.bind(correlation_id="req-1"):
        lines = TextFormatter().format(filtered(failing_record())).splitlines()
    assert lines[0].endswith("failed [req=req-1]")
    assert lines[1] == "Traceback (most recent call last):"


# --- LOGGING as settings.py builds it --------------------------------------------

PROBE = """
import logging, django
django.setup()
from django.conf import settings
from eventbus.observability.context import bind
from signups.verification import make_token
print(settings.LOG_FORMAT, flush=True)
with bind(correlation_id="req-probe", task_id="t-probe"):
    logging.getLogger("eventbus.probe").info("probe line")
logging.getLogger("django.server").info('"GET /signup/verify/%s/ HTTP/1.1" 200 5', make_token(1, "a@example.com"))
"""


def run_probe(**env: str) -> subprocess.CompletedProcess[str]:
    """A fresh process that loads the settings with ``env`` and logs two lines through LOGGING."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "LOG_FORMAT")}
    environment.update(DJANGO_SETTINGS_MODULE="project.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )


PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "a-long-random-test-secret-" + "x" * 40,
    "DJANGO_ALLOWED_HOSTS": "example.com",
    "SITE_URL": "https://example.com",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (PRODUCTION, "json"),
        ({"DJANGO_DEBUG": "1"}, "text"),
        ({**PRODUCTION, "LOG_FORMAT": "TEXT"}, "text"),
        ({"DJANGO_DEBUG": "1", "LOG_FORMAT": "json"}, "json"),
    ],
)
def test_log_format_follows_debug_unless_set(env: dict[str, str], expected: str) -> None:
    # when
    probe = run_probe(**env)

    # then
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == expected
    probe_line, access_line = probe.stderr.strip().splitlines()
    if expected == "json":
        entry = json.loads(probe_line)
        assert (entry["message"], entry["correlation_id"], entry["task_id"]) == ("probe line", "req-probe", "t-probe")
        # runserver's access log goes through the same handler: JSON, token redacted
        assert json.loads(access_line)["message"] == f'"GET /signup/verify/{REDACTED}/ HTTP/1.1" 200 5'
    else:
        assert probe_line.endswith("eventbus.probe: probe line [req=req-probe task=t-probe]")
        assert access_line.endswith(f'django.server: "GET /signup/verify/{REDACTED}/ HTTP/1.1" 200 5')


def test_an_unknown_log_format_stops_the_process_at_start() -> None:
    probe = run_probe(DJANGO_DEBUG="1", LOG_FORMAT="xml")
    assert probe.returncode != 0
    assert "LOG_FORMAT must be json or text" in probe.stderr
