"""The relay draining a backlog in batches, against the real broker and real workers.

Batched sending (eventbus/fastpath/publishing_batch.py) must change nothing a worker,
Flower or an operator sees: the same messages as ``apply_async``'s, one per
subscriber per event, a row dispatched only once the broker took its
messages, backpressure still applied.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from celery.signals import before_task_publish
from django.conf import settings as django_settings

from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import tracing
from eventbus.outbox import fanout as dispatch
from eventbus.outbox.fanout import send, send_many
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app
from signups.events import UserSignedUp
from tests.brokers import using_broker
from tests.conftest import broker_is_redis, drain_messages, queue_length, running_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.usefixtures("broker")]

SUBSCRIBERS = {queues.NOTIFICATIONS: "notifications.send_welcome_email", queues.ANALYTICS: "analytics.record_event"}


def _leave_for_relay(wire: object) -> None:
    """Holds back the on-commit dispatch: the events wait in the outbox, as after a broker outage."""


def backlog(count: int, first_user: int = 100) -> list[str]:
    """``count`` pending events (oldest first), their on-commit dispatch held back."""
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit", _leave_for_relay):
        ids = [
            str(publish(UserSignedUp(user_id=n, channel="web"), aggregate=f"user:{n}").id)
            for n in range(first_user, first_user + count)
        ]
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count() == count
    return ids


def event_ids_in(messages: list[Any]) -> list[str]:
    return [json.loads(m.body)[0][0]["id"] for m in messages]


def test_the_relay_sends_a_backlog_of_several_batches_once_per_subscriber_and_a_worker_consumes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: 23 events stranded; claimed 10 at a time, flushed 4 at a time
    ids = backlog(23)
    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 4)
    flushes: list[int] = []
    real_flush = dispatch.publishing_batch.Batch.flush

    def counted_flush(self: Any) -> None:
        flushes.append(1)
        real_flush(self)

    monkeypatch.setattr(dispatch.publishing_batch.Batch, "flush", counted_flush)

    # when
    result = relay(grace=0, batch=10)

    # then: every event dispatched, one message per subscriber each, in several round trips
    assert (result.dispatched, result.deferred, result.failed) == (23, 0, 0)
    assert len(flushes) == 3 + 3 + 1  # claims of 10, 10 and 3 events: ceil(n / 4) round trips each
    assert not OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).exists()
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 23

    # when: a real worker consumes them
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS):
        wait_for(lambda: ProcessedEvent.objects.count() >= 46, timeout=60, what="46 deliveries")

    # then: each subscriber handled each event once
    handled = sorted(ProcessedEvent.objects.values_list("event_id", "subscriber"))
    assert handled == sorted((uuid.UUID(i), s) for i in ids for s in SUBSCRIBERS.values())
    assert set(ProcessedEvent.objects.values_list("outcome", flat=True)) == {"processed"}


def test_a_batched_message_is_the_message_apply_async_sends() -> None:
    # given: one event, sent once the old way (apply_async per subscriber) and once batched
    (event_id,) = backlog(1)
    wire = OutboxEvent.objects.get(id=event_id).to_wire()
    with celery_app.producer_or_acquire() as producer:
        send(wire, producer)
    plain = {q: drain_messages(q) for q in SUBSCRIBERS}
    send_many([wire])
    batched = {q: drain_messages(q) for q in SUBSCRIBERS}

    for queue, task in SUBSCRIBERS.items():
        (a,), (b,) = plain[queue], batched[queue]
        # then: the same task, arguments, correlation id header, format and delivery
        assert a.headers["task"] == b.headers["task"] == task
        assert b.headers[tracing.HEADER] == a.headers[tracing.HEADER] == wire["correlation_id"]
        assert (
            json.loads(b.body)
            == json.loads(a.body)
            == [[wire], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        )
        assert (
            (b.content_type, b.content_encoding)
            == (a.content_type, a.content_encoding)
            == ("application/json", "utf-8")
        )
        assert b.delivery_info == a.delivery_info
        # every header and property alike but the task's own id (and the root id, which is it)
        assert b.headers["id"] != a.headers["id"] and b.headers["root_id"] == b.headers["id"]
        unique = {"id", "root_id"}
        assert {k: v for k, v in b.headers.items() if k not in unique} == {
            k: v for k, v in a.headers.items() if k not in unique
        }
        assert b.properties["correlation_id"] == b.headers["id"]
        # (AMQP's properties carry the headers again, as application_headers: compared above;
        # on Redis, apply_async given an explicit argsrepr also copies it into the properties,
        # where nothing reads it: the worker and Flower read the header, compared above)
        assert a.properties.get("argsrepr") in (None, b.headers["argsrepr"])
        unique_props = {"correlation_id", "delivery_tag", "application_headers", "argsrepr"}
        assert {k: v for k, v in b.properties.items() if k not in unique_props} == {
            k: v for k, v in a.properties.items() if k not in unique_props
        }


def test_a_message_names_its_event_in_argsrepr_and_leaves_the_payload_out() -> None:
    # given: an event whose payload holds a value that must not show in Flower or the result rows
    (event_id,) = backlog(1, first_user=987654321)
    send_many([OutboxEvent.objects.get(id=event_id).to_wire()])

    for queue in SUBSCRIBERS:
        (message,) = drain_messages(queue)
        argsrepr = message.headers["argsrepr"]
        # then: the event's identity, as a repr of the arguments with the payload elided
        assert ast.literal_eval(argsrepr) == (
            {
                "id": event_id,
                "type": "user.signed_up",
                "version": 2,
                "aggregate": "user:987654321",
                "sequence": 1,
                "payload": "...",
            },
        )
        # and the message itself still carries the whole envelope
        assert json.loads(message.body)[0][0]["payload"] == {"user_id": 987654321, "channel": "web"}


@pytest.mark.skipif(not broker_is_redis(), reason="task-sent events are read from Redis pub/sub here")
def test_a_batch_still_sends_a_task_sent_event_per_message() -> None:
    ids = backlog(3)
    listener = redis_client().pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(f"{django_settings.REDIS_KEY_PREFIX}*celeryev/task.sent")
    try:
        assert relay(grace=0).dispatched == 3
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while len(events) < 6 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)  # None for the subscription's confirmation too
            if message is not None:
                events.append(json.loads(base64.b64decode(json.loads(message["data"])["body"])))
        # nothing more: one event per message
        assert listener.get_message(timeout=0.3) is None
    finally:
        listener.close()
    # the event names the task, its queue and (in the arguments' repr) the outbox event
    sent = sorted((e["name"], e["queue"], next(i for i in ids if i in e["args"])) for e in events)
    assert [e["type"] for e in events] == ["task-sent"] * 6
    assert sent == sorted((task, queue, i) for i in ids for queue, task in SUBSCRIBERS.items())


class CuttableProxy:
    """A TCP proxy in front of the real Redis that can cut every connection, as a broker outage does."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_off.set()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    parts = urlsplit(celery_app.conf.broker_url)
    p = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.skipif(not broker_is_redis(), reason="the proxy speaks to Redis")
def test_a_broker_failure_part_way_leaves_the_unsent_rows_pending_and_the_sent_ones_dispatched(
    proxy: CuttableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: 10 events; flushed 4 at a time; the broker goes away while the second flush is being built
    ids = backlog(10)
    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 4)
    published: list[str] = []

    def outage(sender: str | None = None, **_: Any) -> None:
        published.append(str(sender))
        if len(published) == 11:  # event 6's first message: flush 1 (events 1-4) is done
            proxy.cut()

    url = celery_app.conf.broker_url.replace(f":{proxy.upstream[1]}/", f":{proxy.port}/")
    before_task_publish.connect(outage, weak=False)
    try:
        with using_broker(url):
            result = relay(grace=0, batch=10)
    finally:
        before_task_publish.disconnect(outage)

    # then: the four events of the first flush are dispatched, the six others wait, unleased, with the error
    assert (result.dispatched, result.failed) == (4, 6)
    assert result.error
    rows = {str(r.id): r for r in OutboxEvent.objects.all()}
    assert [rows[i].status for i in ids] == ["dispatched"] * 4 + ["pending"] * 6
    for i in ids[4:]:
        assert rows[i].last_error and rows[i].dispatch_attempts == 1
        assert (rows[i].lease_owner, rows[i].lease_until) == ("", None)
    # and the broker holds exactly the dispatched events' messages
    assert sorted(event_ids_in(drain_messages(queues.NOTIFICATIONS))) == sorted(ids[:4])
    assert sorted(event_ids_in(drain_messages(queues.ANALYTICS))) == sorted(ids[:4])

    # when: the broker is back
    assert relay(grace=0).dispatched == 6

    # then: the rest went out, once each
    assert not OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).exists()
    assert sorted(event_ids_in(drain_messages(queues.NOTIFICATIONS))) == sorted(ids[4:])
    assert sorted(event_ids_in(drain_messages(queues.ANALYTICS))) == sorted(ids[4:])


def test_backpressure_counts_a_batchs_unsent_messages_and_still_sheds_and_defers(settings: Any) -> None:
    # given: a high-water mark of 3 per queue, read fresh every time; 5 events waiting, one flush for all
    settings.EVENTBUS_HIGH_WATER_MARK = 3
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 0
    ids = backlog(5)

    # when
    result = relay(grace=0)

    # then: three events reach both queues; for the other two, analytics is shed and email deferred
    assert (result.dispatched, result.deferred) == (3, 2)
    assert queue_length(queues.NOTIFICATIONS) == queue_length(queues.ANALYTICS) == 3
    rows = {str(r.id): r for r in OutboxEvent.objects.all()}
    assert [rows[i].status for i in ids] == ["dispatched"] * 3 + ["deferred"] * 2
    assert [rows[i].deferred_subscribers for i in ids[3:]] == [[SUBSCRIBERS[queues.NOTIFICATIONS]]] * 2
    shed = ProcessedEvent.objects.filter(outcome=ProcessedEvent.Outcome.SHED)
    assert sorted(str(e) for e in shed.values_list("event_id", flat=True)) == sorted(ids[3:])
    assert set(shed.values_list("subscriber", flat=True)) == {SUBSCRIBERS[queues.ANALYTICS]}

    # when: the queues drained
    drain_messages(queues.NOTIFICATIONS)
    drain_messages(queues.ANALYTICS)
    result = relay(grace=0)

    # then: the deferred emails go out, analytics stays shed
    assert (result.dispatched, result.deferred) == (2, 0)
    assert sorted(event_ids_in(drain_messages(queues.NOTIFICATIONS))) == sorted(ids[3:])
    assert queue_length(queues.ANALYTICS) == 0
