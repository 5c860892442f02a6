"""Any message shape is survivable: each bad shape, pushed raw into each consumer queue, is a poison dead letter.

A message of a registered task whose body is not ``[args, kwargs, embed]``
(``{"a": 1}``) used to stop the worker's main process (``ValueError: not
enough values to unpack``), for the single consumer (Celery's ``Request``) and
the batching one alike, and to stop the next worker too, since it was never
acknowledged; a Redis list item that was not JSON stopped it as well, and was
lost. Here every shape goes in raw, as a broken or hostile producer would send
it, and each test checks: one poison dead letter per message, with its
reason; the queue empty (and, on Redis, nothing left unacknowledged); and the
worker's consumer still consuming: a valid event sent afterwards is handled.

The workers run in threads of this process with the project's consumer
(eventbus/delivery/receive.py), then, for shapes that used to stop it, as a real
``celery worker`` subprocess. The tests run on Redis and on RabbitMQ
(``TEST_BROKER_URL``); raw list items exist on Redis only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from kombu import Connection

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.deadletters import Kind
from eventbus.deadletters.poison import UNREADABLE_ITEM
from eventbus.models import DeadLetter, ProcessedEvent
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app
from tests.conftest import broker_is_redis, queue_length, running_worker, wait_for, worker_process
from tests.factories import sign_up_via_client
from tests.telemetry.helpers import device

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"
ROLLUP = "telemetry.rollup"
TASK_OF_QUEUE = {queues.NOTIFICATIONS: WELCOME, queues.ANALYTICS: ANALYTICS, queues.TELEMETRY: ROLLUP}

# Small limits, so that an oversized message and a cut dead-letter body are cheap to make.
MAX_MESSAGE_BYTES = 64 * 1024
DEAD_LETTER_BODY_BYTES = 4096


@dataclass
class Bad:
    """One bad message: what goes on the queue, and what its dead letter's reason must say."""

    label: str
    body: bytes
    reason: str
    headers: dict[str, Any] = field(default_factory=dict)
    task_id: str = ""


def envelope(**payload: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "user.signed_up",
        "version": 1,
        "occurred_at": "2026-01-02T03:04:05Z",
        "aggregate": "user:7",
        "sequence": 1,
        "correlation_id": uuid.uuid4().hex,
        "causation_id": None,
        "payload": payload or {"user_id": 7},
    }


def task_messages(task: str) -> list[Bad]:
    """Every shape of message for ``task`` that is not a task message Celery can read.

    The first ones carry the task's name and a task id of their own; the last
    three lack the id, all headers, or a name that is a string.
    """
    wire = envelope()
    shapes = [
        Bad("an object body", b'{"a": 1}', "not a task message's [args, kwargs, embed]: dict of 1"),
        Bad("a string body", b'"abc"', "not a task message's [args, kwargs, embed]: str of 3"),
        Bad("two parts", json.dumps([[wire], {}]).encode(), "[args, kwargs, embed]: list of 2"),
        Bad("four parts", json.dumps([[wire], {}, {}, {}]).encode(), "[args, kwargs, embed]: list of 4"),
        Bad("args not a list", json.dumps(["x", {}, {}]).encode(), "the task's args are str of 1, not a list"),
        Bad("kwargs not an object", json.dumps([[wire], [], {}]).encode(), "kwargs are list of 0, not an object"),
        Bad("embed not an object", json.dumps([[wire], {}, "x"]).encode(), "embed (callbacks, chain, chord) is str"),
        Bad("two arguments", json.dumps([[wire, wire], {}, {}]).encode(), f"the arguments do not fit {task}"),
        Bad("no argument", json.dumps([[], {}, {}]).encode(), f"the arguments do not fit {task}"),
        Bad("an unknown keyword", json.dumps([[wire], {"x": 1}, {}]).encode(), f"the arguments do not fit {task}"),
        Bad("retries not a number", json.dumps([[wire], {}, {}]).encode(), "retries is str", {"retries": "many"}),
        Bad("a bad time limit", json.dumps([[wire], {}, {}]).encode(), "timelimit is list of 1", {"timelimit": [1]}),
        Bad(
            "over the size limit",
            json.dumps([[envelope(user_id=7, padding="x" * MAX_MESSAGE_BYTES)], {}, {}]).encode(),
            f"over the {MAX_MESSAGE_BYTES} a message may have",
        ),
    ]
    for bad in shapes:
        bad.task_id = f"poison-{uuid.uuid4()}"
        bad.headers = {"task": task, "id": bad.task_id, "lang": "py", **bad.headers}
    no_id = Bad("no task id", json.dumps([[envelope()], {}, {}]).encode(), "the task id is null", {"task": task})
    no_headers = Bad("no headers", json.dumps([[envelope()], {}, {}]).encode(), "it names no task", {})
    # Celery looks the name up in a dict first: a list is unhashable (TypeError).
    name_not_text = Bad(
        "a task name that is a list",
        json.dumps([[envelope()], {}, {}]).encode(),
        "the task name is list of 1, not a string",
        {"task": [task], "id": f"poison-{uuid.uuid4()}"},
    )
    name_not_text.task_id = name_not_text.headers["id"]
    return [*shapes, no_id, no_headers, name_not_text]


def kombu_item(body: Any, headers: Any, encoding: str = "base64") -> bytes:
    """A Redis list item in kombu's form, with the given body and headers (for items that are almost one)."""
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "body_encoding": encoding,
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": "x"},
                "priority": 0,
            },
        }
    ).encode()


def list_items() -> list[Bad]:
    """Redis list items that are not kombu messages at all."""
    good_body = base64.b64encode(json.dumps([[envelope()], {}, {}]).encode()).decode()
    # The items in kombu's form come first: a batching worker's script takes them behind a valid message.
    return [
        Bad("a body that is not base64", kombu_item("abc", {}), "its base64 body does not decode"),
        Bad("headers that are a string", kombu_item(good_body, "x"), "headers is str of 1, not an object"),
        Bad("an unknown body encoding", kombu_item(good_body, {}, "rot13"), "unknown body_encoding 'rot13'"),
        Bad("not JSON", b"not json " + uuid.uuid4().hex.encode(), "the list item is not JSON"),
        Bad("not UTF-8", b"\xff\xfe" + uuid.uuid4().hex.encode(), "the list item is not JSON"),
        Bad("a JSON object", json.dumps({"a": uuid.uuid4().hex}).encode(), "properties is null, not an object"),
        Bad("a JSON list", json.dumps([1, 2, uuid.uuid4().hex]).encode(), "the item is list of 3, not an object"),
    ]


def publish_raw(queue: str, bad: Bad) -> None:
    """Put ``bad`` on ``queue`` by hand, as a broken or hostile producer would."""
    with Connection(celery_app.conf.broker_url, transport_options=celery_app.conf.broker_transport_options) as conn:
        conn.Producer().publish(
            bad.body,
            exchange=queue,
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers=bad.headers,
        )


def push_raw(queue: str, bad: Bad) -> None:
    """LPUSH ``bad`` onto the queue's Redis list, where kombu's BRPOP takes it."""
    redis_client().lpush(settings.REDIS_KEY_PREFIX + queue, bad.body)


def unacked() -> int:
    return int(redis_client().hlen(settings.REDIS_KEY_PREFIX + "unacked")) if broker_is_redis() else 0


def assert_dead_lettered(queue: str, sent: list[Bad], items: list[Bad]) -> None:
    """One poison dead letter per message, each with its reason; nothing left on the queue or unacknowledged."""
    total = len(sent) + len(items)
    wait_for(lambda: DeadLetter.objects.count() >= total, timeout=30, what=f"{total} dead letters")
    wait_for(lambda: queue_length(queue) == 0 and queue_length(queues.DEAD_LETTER) == 0, what="the queues empty")
    wait_for(lambda: unacked() == 0, what="nothing left unacknowledged")
    rows = list(DeadLetter.objects.all())
    assert len(rows) == total, [row.exception_message for row in rows]
    assert {row.kind for row in rows} == {Kind.POISON.value}
    assert {row.queue for row in rows} == {queue}
    by_task = {row.task_id: row for row in rows if row.task_id}
    for bad in sent:
        row = by_task[bad.task_id] if bad.task_id else _only(rows, bad.reason)
        assert bad.reason in row.exception_message, (bad.label, row.exception_message)
    for bad in items:
        row = _only([r for r in rows if r.exception_type == UNREADABLE_ITEM], bad.reason, bad.body)
        assert row.body is None and row.raw_body, bad.label


def _only(rows: list[DeadLetter], reason: str, raw: bytes | None = None) -> DeadLetter:
    text = raw.decode("utf-8", errors="backslashreplace") if raw is not None else None
    found = [r for r in rows if reason in r.exception_message and (text is None or r.raw_body == text)]
    assert len(found) == 1, (reason, [r.exception_message for r in rows])
    return found[0]


def valid_event(queue: str) -> dict[str, Any]:
    """An event the queue's subscriber handles (for the email, of a user who is gone: handled, nothing sent)."""
    if queue != queues.TELEMETRY:
        return envelope(user_id=999_999)
    dev, _token = device(f"sensor-{uuid.uuid4().hex[:8]}")
    reading = {"seq": 1, "at": timezone.now().isoformat(), "metric": "temp", "value": 20.5}
    return {
        **envelope(),
        "type": "telemetry.readings_received",
        "aggregate": f"device:{dev.pk}",
        "payload": {"device_id": dev.pk, "readings": [reading]},
    }


# What shows that a worker of each queue still consumes: a valid event sent afterwards has its effect.


def welcome_email_arrives(sink: SmtpSink) -> None:
    response = sign_up_via_client(Client())
    assert response.status_code == 302
    wait_for(lambda: len(sink.messages) == 1, timeout=30, what="the next sign-up's welcome email")


def analytics_event_recorded(_: SmtpSink) -> None:
    wire = envelope(user_id=41)
    registry.get(ANALYTICS).task.apply_async(args=(wire,), queue=queues.ANALYTICS)
    wait_for(lambda: AnalyticsEvent.objects.filter(event_id=wire["id"]).exists(), what="the next analytics event")


def readings_rolled_up(_: SmtpSink) -> None:
    wire = valid_event(queues.TELEMETRY)
    registry.get(ROLLUP).task.apply_async(args=(wire,), queue=queues.TELEMETRY)
    wait_for(
        lambda: ProcessedEvent.objects.filter(event_id=wire["id"], subscriber=ROLLUP).exists(),
        what="the next readings rolled up",
    )


STILL_CONSUMING: dict[str, Callable[[SmtpSink], None]] = {
    queues.NOTIFICATIONS: welcome_email_arrives,
    queues.ANALYTICS: analytics_event_recorded,
    queues.TELEMETRY: readings_rolled_up,
}


@pytest.fixture
def small_limits(settings: Any) -> None:
    settings.EVENTBUS_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = DEAD_LETTER_BODY_BYTES


@pytest.mark.parametrize("queue", [queues.NOTIFICATIONS, queues.ANALYTICS, queues.TELEMETRY])
def test_every_bad_task_message_is_a_poison_dead_letter_and_the_worker_goes_on(
    queue: str, broker: None, smtp_sink: SmtpSink, small_limits: None
) -> None:
    # given: a worker on the queue (single consumer for email, batching for analytics and telemetry)
    with running_worker(queue, queues.DEAD_LETTER):
        # when: every bad shape is published to the queue, each with the queue's registered task name
        sent = task_messages(TASK_OF_QUEUE[queue])
        for bad in sent:
            publish_raw(queue, bad)

        # then: one poison dead letter each, with its reason, and nothing left behind
        assert_dead_lettered(queue, sent, [])
        # and: the oversized message's dead letter keeps a preview, the whole length and its hash
        big = next(bad for bad in sent if bad.label == "over the size limit")
        oversized = DeadLetter.objects.get(task_id=big.task_id)
        assert oversized.body is None and oversized.body_truncated
        assert len(oversized.raw_body.encode()) <= DEAD_LETTER_BODY_BYTES
        whole = json.dumps(json.loads(big.body)[0][0], separators=(",", ":")).encode()
        assert (oversized.body_length, oversized.body_sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
        assert whole.decode().startswith(oversized.raw_body)

        # and: the worker still consumes the queue
        STILL_CONSUMING[queue](smtp_sink)


@pytest.mark.parametrize("queue", [queues.NOTIFICATIONS, queues.ANALYTICS, queues.TELEMETRY])
def test_every_list_item_that_is_not_a_kombu_message_is_a_poison_dead_letter(
    queue: str, broker: None, smtp_sink: SmtpSink
) -> None:
    if not broker_is_redis():
        pytest.skip("raw list items exist on Redis only: RabbitMQ hands the worker whole AMQP messages")
    # given: a valid event, then items that are not kombu messages, waiting on the queue's list
    # (a batching worker takes the items behind a valid one in the same round trip, recorded as
    # unacknowledged by eventbus/fastpath/broker.py's script: those records must go too)
    task = TASK_OF_QUEUE[queue]
    good = valid_event(queue)
    registry.get(task).task.apply_async(args=(good,), queue=queue)
    items = list_items()
    for bad in items:
        push_raw(queue, bad)

    with running_worker(queue, queues.DEAD_LETTER):
        # then: each is a poison dead letter with its text and its reason, none lost
        assert_dead_lettered(queue, [], items)
        not_utf8 = DeadLetter.objects.get(raw_body__startswith="\\xff\\xfe")
        assert "the list item is not JSON" in not_utf8.exception_message
        assert ProcessedEvent.objects.filter(event_id=good["id"], subscriber=task).exists()

        # and: the worker still consumes the queue
        STILL_CONSUMING[queue](smtp_sink)


def test_a_worker_process_survives_the_shapes_that_used_to_stop_it(broker: None, smtp_sink: SmtpSink) -> None:
    # given: a real worker process on the email and analytics queues
    with worker_process(queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER, name="poison") as worker:
        # when: {"a": 1} with a registered task name goes to each (ValueError in Celery's
        # Request and in the batching strategy), and, on Redis, an item that is not JSON
        sent = {queue: task_messages(TASK_OF_QUEUE[queue])[:1] for queue in (queues.NOTIFICATIONS, queues.ANALYTICS)}
        for queue, bads in sent.items():
            publish_raw(queue, bads[0])
        items = list_items()[:1] if broker_is_redis() else []
        for bad in items:
            push_raw(queues.NOTIFICATIONS, bad)

        # then: each is a poison dead letter, and the process still runs
        total = 2 + len(items)
        wait_for(lambda: DeadLetter.objects.count() == total, timeout=30, what=f"{total} dead letters")
        for queue, bads in sent.items():
            row = DeadLetter.objects.get(task_id=bads[0].task_id)
            assert (row.kind, row.queue) == (Kind.POISON.value, queue)
            assert "not a task message's [args, kwargs, embed]" in row.exception_message
        assert worker.poll() is None

        # and: the next sign-up is emailed and recorded by the same process
        welcome_email_arrives(smtp_sink)
        wait_for(lambda: AnalyticsEvent.objects.exists(), what="the next sign-up's analytics row")
        assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == unacked() == 0
        assert worker.poll() is None
        log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "Unrecoverable error" not in log
