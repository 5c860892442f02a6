"""One request id, followed from the sign-up through the broker into the worker's log lines (and beat's)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import context, tracing
from eventbus.outbox.fanout import send_many
from eventbus.tasks import relay_outbox
from project import queues
from project.celery import app as celery_app
from project.logging import ContextFilter, JsonFormatter, RedactFilter
from signups.events import UserSignedUp
from tests.conftest import REPO, drain_messages, wait_for, worker_env, worker_process
from tests.factories import PASSWORD, unique_email

SUBSCRIBERS = ("notifications.send_welcome_email", "analytics.record_event")


def wire(correlation_id: str = "req-from-envelope", user_id: int = 1) -> dict[str, Any]:
    """The wire form of a ``user.signed_up`` event, as dispatch sends it."""
    return Envelope(
        id=uuid.uuid4(),
        type="user.signed_up",
        version=2,
        occurred_at=datetime.now(UTC),
        aggregate=f"user:{user_id}",
        sequence=1,
        correlation_id=correlation_id,
        causation_id=None,
        payload=UserSignedUp(user_id=user_id, channel="web"),
    ).to_dict()


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a log (a worker's also holds its start-up banner, which is not JSON)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextmanager
def web_log() -> Iterator[io.StringIO]:
    """The web process's log lines while the block runs, as LOGGING writes them in production (JSON)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactFilter())
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def beat_process(env: dict[str, str]) -> Iterator[Path]:
    """A real ``celery beat`` subprocess; yields the path of its log file."""
    run_dir = Path(os.environ["EVENTDEMO_TEST_RUN_DIR"])
    stamp = time.monotonic_ns()
    log = run_dir / f"beat-{stamp}.log"
    command = [sys.executable, "-m", "celery", "-A", "project", "beat", "-s", str(run_dir / f"beat-{stamp}.db")]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "-l", "INFO"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


# --- publishing: the header ------------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_an_events_tasks_carry_the_envelopes_correlation_id_in_their_headers() -> None:
    # given: the relay, in a run of its own, sends an event a request wrote earlier
    event = wire(correlation_id="req-of-the-signup")

    # when
    with context.bind(correlation_id="relay-run-1"):
        send_many([event])

    # then: one message per subscriber, each with the request's id, not the relay's
    messages = drain_messages(queues.NOTIFICATIONS) + drain_messages(queues.ANALYTICS)
    assert sorted(m.headers["task"] for m in messages) == sorted(SUBSCRIBERS)
    assert [m.headers[tracing.HEADER] for m in messages] == ["req-of-the-signup"] * 2


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_a_task_without_an_event_takes_the_current_id_or_a_fresh_one_per_send() -> None:
    # when: twice outside any request (as beat sends the relay), once inside one
    relay_outbox.apply_async(queue=queues.EVENTBUS)
    relay_outbox.apply_async(queue=queues.EVENTBUS)
    with context.bind(correlation_id="req-42"):
        relay_outbox.apply_async(queue=queues.EVENTBUS)

    # then
    first, second, third = (m.headers[tracing.HEADER] for m in drain_messages(queues.EVENTBUS))
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second
    assert third == "req-42"


# --- running: the context of one task run ----------------------------------------


@contextmanager
def running(task: Any, args: tuple[Any, ...], **request: Any) -> Iterator[None]:
    """``task``'s prerun and postrun handlers around the block, with ``request`` as its request."""
    task.push_request(**request)
    try:
        tracing.bind_task_context(task_id=request.get("id"), task=task, args=args)
        try:
            yield
        finally:
            tracing.unbind_task_context(task=task)
    finally:
        task.pop_request()


def test_a_run_binds_the_header_the_event_the_subscriber_and_the_task_then_restores() -> None:
    task = celery_app.tasks["analytics.record_event"]
    event = wire(correlation_id="req-envelope")

    with context.bind(correlation_id="outer"), running(task, (event,), id="t-1", x_correlation_id="req-header"):
        assert context.current() == {
            "correlation_id": "req-header",
            "event_id": event["id"],
            "event_type": "user.signed_up",
            "subscriber": "analytics.record_event",
            "task_id": "t-1",
            "task_name": "analytics.record_event",
        }

    assert context.current() == {}


def test_a_run_without_the_header_takes_the_envelopes_id_and_without_both_a_fresh_one() -> None:
    with running(celery_app.tasks["analytics.record_event"], (wire(correlation_id="req-envelope"),), id="t-2"):
        assert context.get_correlation_id() == "req-envelope"
    with running(relay_outbox, (), id="t-3"):
        fresh = context.get_correlation_id()
        assert fresh and re.fullmatch(r"[0-9a-f]{32}", fresh)
        assert context.current().keys() == {"correlation_id", "task_id", "task_name"}


def test_values_unfit_for_a_log_line_are_not_bound() -> None:
    forged = {**wire(), "id": "x\n2025-01-01 INFO forged line", "correlation_id": "a b"}
    with running(celery_app.tasks["analytics.record_event"], (forged,), id="t-4", x_correlation_id="bad\nid"):
        values = context.current()
    assert "event_id" not in values
    assert values["correlation_id"] not in ("a b", "bad\nid")


# --- end to end: a sign-up's request id in the web log and the worker log --------


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("broker")
def test_one_signups_request_id_is_in_the_web_log_and_the_worker_log(client: Client, smtp_sink: SmtpSink) -> None:
    request_id = f"signup-{uuid.uuid4().hex[:12]}"

    with worker_process(queues.NOTIFICATIONS, queues.ANALYTICS, name="trace", env=worker_env(LOG_FORMAT="json")) as w:
        # when: a sign-up with a request id of the client's
        with web_log() as web:
            response = client.post(
                "/signup/",
                {"email": unique_email(), "password": PASSWORD, "password_confirm": PASSWORD},
                headers={"X-Request-ID": request_id},
            )
        assert response.status_code == 302
        assert response["X-Request-ID"] == request_id
        wait_for(lambda: ProcessedEvent.objects.count() >= 2 and smtp_sink.messages, what="both deliveries")
        worker_log: Path = w.log_path  # type: ignore[attr-defined]
        # the email's task ends with Celery's own line; the batched analytics event with the batch's
        wait_for(
            lambda: "succeeded in" in worker_log.read_text() and "in a batch of" in worker_log.read_text(),
            what="both deliveries' success lines",
            timeout=10,
        )
    event = OutboxEvent.objects.get()
    assert event.correlation_id == request_id

    # then: the web log says where the event went: one line per subscriber, with its task id
    web_text, worker_text = web.getvalue(), worker_log.read_text()
    sent = {
        line["subscriber"]: line for line in json_lines(web_text) if line["logger"] == "eventbus.observability.tracing"
    }
    assert sent.keys() == set(SUBSCRIBERS)
    for line in sent.values():
        assert (line["correlation_id"], line["event_id"], line["event_type"]) == (
            request_id,
            str(event.id),
            "user.signed_up",
        )

    # and the worker log has each task's lines, its own and Celery's, with the same ids
    worker_lines = json_lines(worker_text)
    for subscriber, web_line in sent.items():
        task_lines = [line for line in worker_lines if line.get("task_id") == web_line["task_id"]]
        by_logger = {line["logger"]: line for line in task_lines}
        if registry.get(subscriber).batch:
            assert "in a batch of" in by_logger["eventbus.delivery.batch"]["message"], task_lines
            ours = [by_logger["eventbus.delivery.batch"]]
        else:
            assert {"eventbus.delivery.consumer", "celery.app.trace"} <= by_logger.keys(), task_lines
            assert "succeeded" in by_logger["celery.app.trace"]["message"]
            ours = [by_logger["eventbus.delivery.consumer"], by_logger["celery.app.trace"]]
        for line in ours:
            assert (line["correlation_id"], line["event_id"], line["subscriber"], line["event_type"]) == (
                request_id,
                str(event.id),
                subscriber,
                "user.signed_up",
            ), line
            assert line["process"].startswith("ForkPoolWorker")

    # and neither log holds the password or the verification token (the email body does)
    body = smtp_sink.messages[0].message().get_body(preferencelist=("plain",)).get_content()
    token = re.search(r"/signup/verify/([^/\s]+)/", body).group(1)  # type: ignore[union-attr]
    for text in (web_text, worker_text):
        assert PASSWORD not in text
        assert token not in text


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("broker")
def test_each_beat_run_of_the_relay_has_a_fresh_id_in_the_beat_log_and_the_worker_log() -> None:
    # The relay's received/succeeded lines are housekeeping, logged at DEBUG (project/logging.py).
    env = worker_env(LOG_FORMAT="json", LOG_LEVEL="DEBUG", EVENTBUS_RELAY_INTERVAL="0.5")

    # when: beat sends the relay a few times to a worker on the eventbus queue
    with worker_process(queues.EVENTBUS, concurrency=1, name="relay", env=env) as w, beat_process(env) as beat_log:
        worker_log: Path = w.log_path  # type: ignore[attr-defined]
        wait_for(
            lambda: worker_log.read_text().count("Task eventbus.relay_outbox[") >= 6,  # received and succeeded
            what="three relay runs",
        )

    # then: beat logged each send with a new id, and the worker's lines of that run carry it
    sends = [
        line
        for line in json_lines(beat_log.read_text())
        if line["logger"] == "eventbus.observability.tracing" and "task_id" in line
    ]
    successes = {
        line["task_id"]: line
        for line in json_lines(worker_log.read_text())
        if line["logger"] == "celery.app.trace" and "succeeded" in line["message"]
    }
    ran = [send for send in sends if send["task_id"] in successes]
    assert len(ran) >= 2, (sends, successes)
    for send in ran:
        assert send["task_name"] == "eventbus.relay_outbox"
        assert successes[send["task_id"]]["correlation_id"] == send["correlation_id"]
    assert len({send["correlation_id"] for send in ran}) == len(ran)
