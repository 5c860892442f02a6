"""The whole pipeline with real parts: Django test client, Redis, a Celery worker, an SMTP sink."""

from __future__ import annotations

import json
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_celery_results.models import TaskResult
from kombu import Connection

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.contract.subscriber import subscriber
from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.outbox.fanout import send_many
from project import queues
from project.celery import app as celery_app
from tests.conftest import queue_length, running_worker, wait_for
from tests.factories import PASSWORD, sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def delivered(count: int) -> bool:
    return ProcessedEvent.objects.count() >= count


def test_a_signup_sends_one_welcome_email_and_records_one_analytics_row(
    worker: Any, smtp_sink: SmtpSink, client: Client
) -> None:
    # when
    response = sign_up_via_client(client, email="grace@example.com")
    assert response.status_code == 302
    wait_for(lambda: delivered(2) and smtp_sink.messages, what="both deliveries")

    # then: one email, with both parts, the link and a Message-ID derived from the event
    event = OutboxEvent.objects.get()
    (mail,) = smtp_sink.messages
    message = mail.message()
    assert mail.rcpt_tos == ("grace@example.com",)
    assert message["Message-ID"] == f"<welcome.{event.id}@testserver>"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    link = re.search(r"http://testserver/signup/verify/[^/\s]+/", text)
    assert link and link.group(0) in html
    # and one analytics row
    row = AnalyticsEvent.objects.get()
    assert (row.event_id, row.type, row.user_id) == (event.id, "user.signed_up", get_user_model().objects.get().pk)
    # and the status page shows both done
    data = client.get("/signup/status.json").json()
    assert {d["label"]: d["text"] for d in data["events"][0]["deliveries"]} == {
        "welcome email": "sent",
        "analytics": "recorded",
    }


def test_the_verification_link_produces_a_second_event_that_analytics_records(
    worker: Any, smtp_sink: SmtpSink, client: Client
) -> None:
    sign_up_via_client(client, email="link@example.com")
    wait_for(lambda: smtp_sink.messages, what="the welcome email")
    text = smtp_sink.messages[0].message().get_body(preferencelist=("plain",)).get_content()
    path = re.search(r"http://testserver(/signup/verify/[^/\s]+/)", text).group(1)  # type: ignore[union-attr]

    response = client.get(path)
    client.get(path)  # a second click publishes nothing

    assert response.status_code == 200
    wait_for(lambda: AnalyticsEvent.objects.filter(type="user.email_verified").exists(), what="verification row")
    assert OutboxEvent.objects.filter(type="user.email_verified").count() == 1
    dashboard = client.get("/analytics/")
    assert b'id="funnel-verified">1<' in dashboard.content
    assert len(smtp_sink.messages) == 1


def test_the_same_event_delivered_twice_has_one_effect(worker: Any, smtp_sink: SmtpSink, client: Client) -> None:
    # given: a sign-up whose effects happened
    sign_up_via_client(client)
    wait_for(lambda: delivered(2), what="first delivery")
    wire = OutboxEvent.objects.get().to_wire()

    # when: the broker delivers it again to both subscribers (as after a redelivery)
    send_many([wire])
    wait_for(
        lambda: sum(counters.read(counters.DUPLICATES).values()) >= 2,
        what="both duplicates skipped",
    )

    # then
    assert len(smtp_sink.messages) == 1
    assert AnalyticsEvent.objects.count() == 1
    assert counters.read(counters.DUPLICATES) == {"notifications.send_welcome_email": 1, "analytics.record_event": 1}


def test_a_new_subscriber_is_one_decorated_function(broker: None, smtp_sink: SmtpSink, client: Client) -> None:
    seen: list[tuple[str, int]] = []

    # given: a new consumer of user.signed_up, declared here and nowhere else
    @subscriber("user.signed_up", name="tests.count_signups", queue=queues.ANALYTICS, label="counter")
    def count_signups(event: Any) -> None:
        seen.append((event.type, event.payload.user_id))

    try:
        with running(queues.NOTIFICATIONS, queues.ANALYTICS):
            sign_up_via_client(client)
            wait_for(lambda: delivered(3), what="three deliveries")
        user_id = get_user_model().objects.get().pk
        assert seen == [("user.signed_up", user_id)]
        assert ProcessedEvent.objects.filter(subscriber="tests.count_signups").count() == 1
    finally:
        registry.unregister("tests.count_signups")
        celery_app.tasks.pop("tests.count_signups", None)


def running(*names: str) -> Any:
    from tests.conftest import running_worker

    return running_worker(*names)


def test_results_are_stored_with_name_queue_and_arguments_without_secrets(
    worker: Any, smtp_sink: SmtpSink, client: Client
) -> None:
    sign_up_via_client(client)
    wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").exists(), what="a stored result")
    wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")

    # the welcome email's task stores its result; the batched analytics
    # subscriber has no task run per message, and its ledger row is the record
    results = {r.task_name: r for r in TaskResult.objects.all()}
    assert set(results) == {"notifications.send_welcome_email"}
    event_id = str(OutboxEvent.objects.get().id)
    for name, result in results.items():
        assert event_id in result.task_args
        assert json.loads(result.meta)["queue"] == registry.get(name).queue
        assert result.worker
        assert PASSWORD not in result.task_args + result.result + result.meta
    recorded = ProcessedEvent.objects.get(subscriber="analytics.record_event")
    assert recorded.task_id and recorded.worker and recorded.runtime_ms is not None


class _TouchOnUnpickle:
    """Unpickled, this creates ``path``: the proof that a worker ran code from a message's body."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


def test_a_pickled_message_is_refused(broker: None, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    # given: a message a malicious or misconfigured producer pickled: a valid analytics
    # event, and beside it an object whose unpickling creates a file
    marker = tmp_path / "unpickled"
    event_id = str(uuid.uuid4())
    wire = {
        "id": event_id,
        "type": "user.signed_up",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "aggregate": "user:424242",
        "sequence": 1,
        "correlation_id": "pickled",
        "causation_id": None,
        "payload": {"user_id": 424242},
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None, "unpickled": _TouchOnUnpickle(marker)}
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER):
        with Connection(celery_app.conf.broker_url, transport_options=celery_app.conf.broker_transport_options) as conn:
            producer = conn.Producer()
            producer.publish(
                pickle.dumps([[wire], {}, embed]),
                content_encoding="binary",
                exchange=queues.ANALYTICS,
                routing_key=queues.ANALYTICS,
                headers={
                    "task": "analytics.record_event",
                    "id": "pickled-1",
                    "lang": "py",
                    "argsrepr": "",
                    "kwargsrepr": "",
                },
                content_type="application/x-python-serialize",
            )

        # then: the worker dealt with it, one way or the other (refused, or ran it)
        wait_for(
            lambda: DeadLetter.objects.exists() or AnalyticsEvent.objects.filter(event_id=event_id).exists(),
            what="the worker done with the message",
        )
    # and: nothing in the body ran, and the task never ran on the event it carried
    assert not marker.exists(), "the worker unpickled the message: code from its body ran"
    assert not AnalyticsEvent.objects.filter(event_id=event_id).exists(), "the pickled task ran"
    assert not ProcessedEvent.objects.exists()
    assert not TaskResult.objects.filter(task_id="pickled-1").exists()
    # and: it was set aside as a poison dead letter, saying why, not left in the queue
    letter = DeadLetter.objects.get()
    assert letter.kind == "poison"
    assert "application/x-python-serialize" in letter.reason and "not accepted" in letter.reason
    assert queue_length(queues.ANALYTICS) == 0
