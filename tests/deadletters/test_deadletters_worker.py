"""Poison messages and replays with a REAL Celery worker on the real Redis (this run's key prefix).

The worker runs in threads of this process with the project's consumer
(CELERY_WORKER_CONSUMER), so it uses its own database connections: these tests
need a transactional database, which the settings keep in a file.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from django.conf import settings
from kombu import Connection, Message

from analytics.models import AnalyticsEvent
from eventbus.contract import registry
from eventbus.deadletters import Kind, operations, send_to_dead_letter
from eventbus.deadletters.capture import DeadLetterNotCaptured
from eventbus.deadletters.poison import failure_from_message
from eventbus.deadletters.shapes import task_message_problem
from eventbus.delivery import receive as worker
from eventbus.models import DeadLetter, ProcessedEvent
from eventbus.observability import counters
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app
from tests.conftest import queue_length, running_worker, wait_for
from tests.deadletters.test_deadletters import ANALYTICS, dead_letter, envelope, failure

# --- unit: what is read from a raw message, and the hooks never raise ----------


class _Channel:
    """Just enough of a kombu channel for Message.ack()."""

    no_ack_consumers = None

    def __init__(self) -> None:
        self.acked: list[object] = []

    def basic_ack(self, delivery_tag: object, multiple: bool = False) -> None:
        self.acked.append(delivery_tag)


def raw_message(body: bytes, content_type: str, headers: dict[str, Any] | None = None) -> Message:
    return Message(
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        headers=headers or {},
        delivery_info={"routing_key": queues.ANALYTICS},
        delivery_tag="tag-1",
        channel=_Channel(),
    )


def test_a_pickled_body_is_kept_as_text_and_never_unpickled() -> None:
    made = failure_from_message(
        raw_message(pickle.dumps({"boom": 1}), "application/x-python-serialize", {"task": ANALYTICS, "id": "t"}),
        reason="not accepted",
    )
    assert made.kind is Kind.POISON and made.body is None
    assert made.raw_body is not None and "\\x80" in made.raw_body and "boom" in made.raw_body
    assert (made.queue, made.subscriber, made.task_id, made.message_id) == (queues.ANALYTICS, ANALYTICS, "t", "tag-1")


def test_the_envelope_inside_a_task_message_is_kept_as_json() -> None:
    wire = envelope()
    body = json.dumps([[wire], {}, {"callbacks": None}]).encode()
    made = failure_from_message(raw_message(body, "application/json", {"task": "nope.unknown"}), reason="unknown")
    assert made.body == wire and made.raw_body is None
    assert (made.event_id, made.event_type) == (uuid.UUID(wire["id"]), "user.signed_up")
    assert (made.task_name, made.subscriber) == ("nope.unknown", "")


def test_the_hooks_never_raise_and_always_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_: object) -> None:
        raise DeadLetterNotCaptured("broker and database down")

    def celery_default_fails() -> None:
        raise RuntimeError("result backend down")

    monkeypatch.setattr("eventbus.deadletters.capture.send_to_dead_letter", refuse)
    message = raw_message(b"{", "application/json")

    worker._dead_letter(message, "bad", None)
    worker._handle_then_acknowledge(message, celery_default_fails)

    assert message.acknowledged and message.channel.acked == ["tag-1"]


def test_the_shape_check_passes_every_form_celery_reads_and_leaves_celerys_own_refusals_to_it() -> None:
    tasks = celery_app.tasks
    wire = envelope()

    def problem(body: Any, headers: dict[str, Any] | None, content_type: str = "application/json") -> str | None:
        message = raw_message(json.dumps(body).encode(), content_type, headers)
        message.headers = headers  # raw_message turns None into {}
        return task_message_problem(message, tasks, 1_000_000)

    header = {"task": ANALYTICS, "id": "t-1", "retries": 2, "timelimit": [90, 60.5]}
    # protocol 2, Celery's hybrid form and protocol 1 are read as Celery reads them
    assert problem([[wire], {}, {"callbacks": None}], header) is None
    assert problem([[wire], {}, None], header) is None
    assert problem({"args": [wire], "kwargs": {}}, header) is None
    assert problem({"task": ANALYTICS, "id": "t-1", "args": [wire], "kwargs": {}}, {}) is None
    # what Celery itself dead-letters (through DeadLetteringConsumer) is left to it
    assert problem({"a": 1}, {}) is None  # no task name anywhere: not a task message
    assert problem({"a": 1}, None) is None
    assert problem({"a": 1}, {"task": "no.such.task", "id": "t-2"}) is None
    raw = raw_message(b"{not json", "application/json", header)
    assert task_message_problem(raw, tasks, 1_000_000) is None
    # and a protocol 1 body is checked like the others
    assert "args are str" in str(problem({"task": ANALYTICS, "id": "t-1", "args": "x"}, {}))
    assert "over the 8 a message may have" in str(task_message_problem(raw, tasks, 8))


def test_a_shape_the_check_did_not_foresee_is_dead_lettered_and_never_stops_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: Celery's handler failing on a message the check let through
    def celery_reads(message: Any) -> None:
        raise ValueError("not enough values to unpack (expected 3, got 1)")

    monkeypatch.setattr(Consumer, "create_task_handler", lambda self, promise=None: celery_reads)
    monkeypatch.setattr(Consumer, "on_invalid_task", lambda self, body, message, exc: None)
    reasons: list[str] = []
    monkeypatch.setattr(worker, "_dead_letter", lambda message, reason, exc, **_: reasons.append(reason))
    consumer = worker.DeadLetteringConsumer.__new__(worker.DeadLetteringConsumer)
    consumer.app = celery_app
    body = json.dumps([[envelope()], {}, {}]).encode()
    message = raw_message(body, "application/json", {"task": ANALYTICS, "id": "t"})

    # when
    consumer.create_task_handler()(message)

    # then: a poison dead letter with what went wrong, the message settled, nothing raised
    assert reasons == [
        "invalid task message: the worker could not read the message: "
        "ValueError: not enough values to unpack (expected 3, got 1)"
    ]
    assert message.acknowledged


# --- integration: a real worker, the real Redis --------------------------------


@pytest.fixture
def dead_letter_worker(broker: None) -> Iterator[Any]:
    """A real worker on the analytics queue and the dead_letter queue (which stores dead letters)."""
    assert settings.CELERY_WORKER_CONSUMER == "eventbus.delivery.receive:DeadLetteringConsumer"
    with running_worker(queues.ANALYTICS, queues.DEAD_LETTER) as w:
        yield w


def publish_raw(body: bytes, content_type: str, task: str, task_id: str, encoding: str = "utf-8") -> None:
    """Put a message on the analytics queue by hand, as a broken or hostile producer would."""
    with Connection(celery_app.conf.broker_url, transport_options=celery_app.conf.broker_transport_options) as conn:
        conn.Producer().publish(
            body,
            exchange=queues.ANALYTICS,
            routing_key=queues.ANALYTICS,
            content_type=content_type,
            content_encoding=encoding,
            headers={"task": task, "id": task_id, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
        )


def unacked() -> int:
    return int(redis_client().hlen(settings.REDIS_KEY_PREFIX + "unacked"))


def settled() -> bool:
    """Nothing left that could come back: no message waiting, none unacknowledged on Redis, and the
    worker (a thread of this process) holding no request, running or reserved (on any broker)."""
    waiting = queue_length(queues.ANALYTICS) + queue_length(queues.DEAD_LETTER) + unacked()
    return waiting == 0 and not worker_state.active_requests and not worker_state.reserved_requests


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_poison_messages_become_dead_letters_and_the_worker_keeps_serving(dead_letter_worker: Any) -> None:
    # given: three messages no task can take, on a subscriber's queue
    wire = envelope()
    publish_raw(b"{this is not json", "application/json", ANALYTICS, "poison-not-json")
    publish_raw(pickle.dumps([[wire], {}, {}]), "application/x-python-serialize", ANALYTICS, "poison-pickle", "binary")
    publish_raw(json.dumps([[wire], {}, {}]).encode(), "application/json", "analytics.no_such_task", "poison-unknown")

    # then: each becomes a poison dead letter with its reason
    wait_for(lambda: DeadLetter.objects.filter(kind=Kind.POISON).count() == 3, what="three poison dead letters")
    rows = {row.task_id: row for row in DeadLetter.objects.all()}

    not_json = rows["poison-not-json"]
    assert (not_json.queue, not_json.subscriber, not_json.body) == (queues.ANALYTICS, ANALYTICS, None)
    assert not_json.raw_body == "{this is not json"
    assert "DecodeError" in not_json.exception_type and "could not be decoded" in not_json.exception_message

    pickled = rows["poison-pickle"]
    assert pickled.body is None and "\\x80" in pickled.raw_body
    assert "ContentDisallowed" in pickled.exception_type
    assert "'application/x-python-serialize' is not accepted" in pickled.exception_message

    unknown = rows["poison-unknown"]
    assert unknown.exception_type == "celery.exceptions.NotRegistered"
    assert "unregistered task 'analytics.no_such_task'" in unknown.exception_message
    assert (unknown.task_name, unknown.subscriber, unknown.body) == ("analytics.no_such_task", "", wire)
    assert str(unknown.event_id) == wire["id"]

    # and: the worker still serves a valid event published afterwards
    good = envelope(user_id=99)
    registry.get(ANALYTICS).task.apply_async(args=(good,), queue=queues.ANALYTICS)
    wait_for(lambda: AnalyticsEvent.objects.filter(event_id=good["id"]).exists(), what="the valid event recorded")

    # and: nothing loops: once no message is left anywhere, there are no new dead letters
    wait_for(settled, what="every message settled")
    assert DeadLetter.objects.count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_failure_sent_twice_through_the_dead_letter_queue_is_stored_once(dead_letter_worker: Any) -> None:
    made = failure()
    send_to_dead_letter(made)
    send_to_dead_letter(made)  # a redelivered failure: same id

    wait_for(lambda: DeadLetter.objects.filter(pk=made.id).exists(), what="the stored dead letter")
    wait_for(settled, what="both messages consumed")
    assert DeadLetter.objects.count() == 1
    assert DeadLetter.objects.get().body == made.body


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_replaying_twice_has_one_effect(dead_letter_worker: Any) -> None:
    # given: an analytics event that exhausted its retries
    row = dead_letter()

    # when: an operator replays it twice
    first = operations.replay([row], by="alice").items[0]
    second = operations.replay([row], by="bob").items[0]

    # then: both messages are consumed, one records the row and the ledger skips the other
    wait_for(
        lambda: counters.read(counters.DUPLICATES).get("analytics.record_event") == 1,
        what="the second replay skipped as a duplicate",
    )
    wait_for(lambda: queue_length(queues.ANALYTICS) == 0 and unacked() == 0, what="both messages acknowledged")
    ledger = ProcessedEvent.objects.get(event_id=row.event_id, subscriber="analytics.record_event")
    assert ledger.task_id in {first.task_id, second.task_id}
    assert AnalyticsEvent.objects.filter(event_id=row.event_id).count() == 1
    assert row.replays.count() == 2
