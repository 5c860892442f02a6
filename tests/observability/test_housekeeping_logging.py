"""Beat's frequent housekeeping (the relay, the broker watch) logs its routine runs at DEBUG (project/logging.py)."""

from __future__ import annotations

import logging

import pytest
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

from project.logging import HousekeepingFilter


def success(name: str) -> dict[str, object]:
    return {"id": "t-1", "name": name, "return_value": "0", "runtime": 0.01, "args": "()", "kwargs": "{}"}


@pytest.mark.parametrize("logger_name", ["celery.worker.strategy", "celery.app.trace", "celery.beat"])
def test_the_three_loggers_of_the_routine_lines_carry_the_filter(logger_name: str) -> None:
    assert any(isinstance(f, HousekeepingFilter) for f in logging.getLogger(logger_name).filters)


def test_a_housekeeping_success_is_dropped_at_info_and_the_applications_own_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="celery.app.trace")
    trace = logging.getLogger("celery.app.trace")
    # when: Celery's own calls, as celery.app.trace.info() and the worker's strategy make them
    trace.info(LOG_SUCCESS, success("eventbus.relay_outbox"), extra={"data": success("eventbus.relay_outbox")})
    trace.info(LOG_RECEIVED, success("eventbus.watch_broker"), extra={"data": success("eventbus.watch_broker")})
    trace.info(LOG_SUCCESS, success("notifications.send_welcome_email"))
    trace.warning("Task eventbus.relay_outbox[t-2] raised %s", "something")
    # then
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [m for _, m in messages if "relay_outbox" in m or "watch_broker" in m] == [
        "Task eventbus.relay_outbox[t-2] raised something"
    ]
    assert ("INFO", "Task notifications.send_welcome_email[t-1] succeeded in 0.01s: 0") in messages


def test_beats_sending_line_is_lowered_and_shown_with_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="celery.beat")
    beat = logging.getLogger("celery.beat")
    beat.info("Scheduler: Sending due task %s (%s)", "eventbus.relay_outbox", "eventbus.relay_outbox")
    beat.info("Scheduler: Sending due task %s (%s)", "eventbus.purge_expired", "eventbus.purge_expired")
    levels = {r.args[1]: r.levelname for r in caplog.records if isinstance(r.args, tuple)}
    assert levels == {"eventbus.relay_outbox": "DEBUG", "eventbus.purge_expired": "INFO"}
