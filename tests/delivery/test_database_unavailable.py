"""A delivery that meets the database unavailable (stopped, restarting, failing over) is retried: never
dead-lettered, never counted as a dead worker, and an email already sent is not sent again.

The faults are real where they can be timed from outside: the connection is pointed at a port nothing
listens on (tests/signups/test_signup_database_unavailable.py's ``database_unreachable``). A database
that goes away between two statements of one delivery cannot be timed from outside, so there Django's
own hook around every statement (``connection.execute_wrapper``) fails the one statement as a
connection lost mid-delivery fails it. tests/failover/test_postgres_restart.py stops a real server.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client

from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.delivery import pipeline, unrecorded
from eventbus.delivery.batch import ACK, Item
from eventbus.delivery.guards import Batch, Delivery
from eventbus.delivery.verdict import Action, Verdict
from eventbus.models import DeadLetter, OutboxEvent, ProcessedEvent
from eventbus.redis import client
from tests.factories import sign_up_via_client
from tests.signups.test_signup_database_unavailable import database_unreachable

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"
TASK = SimpleNamespace(request=SimpleNamespace(hostname="test-worker"))
"""What ``run_effect`` reads of its Celery task: the worker's name, for the ledger row."""


def signed_up() -> OutboxEvent:
    assert sign_up_via_client(Client(REMOTE_ADDR="192.0.2.60")).status_code == 302
    return OutboxEvent.objects.get(type="user.signed_up")


def delivery_of(row: OutboxEvent, subscriber: str, retries: int = 0, **changes: Any) -> Delivery:
    subscription = dataclasses.replace(registry.get(subscriber), **changes)
    return Delivery(subscription, Envelope.from_dict(row.to_wire()), row.to_wire(), str(uuid.uuid4()), retries)


@contextmanager
def statement_fails(fragment: str) -> Iterator[None]:
    """Statements containing ``fragment`` fail as on a connection the server closed."""

    def wrapper(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if fragment in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, *args)

    with connection.execute_wrapper(wrapper):
        yield


@pytest.mark.parametrize("transactional", [False, True], ids=["email", "in-the-database"])
def test_an_effect_that_meets_the_database_unavailable_is_a_transient_failure(
    transactional: bool, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    # given: the welcome email reads its address from the database; in a transaction, so does the ledger
    row = signed_up()
    delivery = delivery_of(row, EMAIL, transactional=transactional)

    # when
    with database_unreachable(tmp_path):
        verdict = pipeline.run_effect(TASK, delivery)  # type: ignore[arg-type]

    # then: retried with backoff, not a permanent dead letter; nothing was sent
    assert verdict.action is Action.FAIL
    assert verdict.transient, verdict
    assert isinstance(verdict.error, OperationalError)
    assert smtp_sink.messages == []


def attempt(delivery: Delivery) -> Verdict:
    """One attempt as the pipeline runs it: the guards (the effect lock's round trip), the effect, the end."""
    (checked,) = pipeline.check(Batch(delivery.subscription, [delivery]))
    assert checked.goes_on, checked
    verdict = pipeline.run_effect(TASK, delivery)  # type: ignore[arg-type]
    pipeline.finish(Batch(delivery.subscription, [delivery]), verdict)
    return verdict


def test_an_email_sent_while_its_ledger_entry_could_not_be_written_is_not_sent_again(
    smtp_sink: SmtpSink, redis_prefix: str
) -> None:
    row = signed_up()
    note = unrecorded.key_of(EMAIL, row.id)

    # when: the email goes out and the database is gone before its ledger entry
    with statement_fails('INSERT INTO "eventbus_processedevent"'):
        verdict = attempt(delivery_of(row, EMAIL))
    assert verdict.action is Action.FAIL and verdict.transient
    assert len(smtp_sink.messages) == 1
    assert not ProcessedEvent.objects.exists()
    assert client().exists(note)

    # and: the retry runs with the database back
    again = attempt(delivery_of(row, EMAIL, retries=1))

    # then: the entry is written, the email is not sent a second time, and the note is gone
    assert again.action is Action.GO
    assert len(smtp_sink.messages) == 1
    assert ProcessedEvent.objects.filter(event_id=row.id, subscriber=EMAIL).count() == 1
    assert not client().exists(note)


def test_a_batch_whose_ledger_cannot_be_read_goes_one_by_one_and_is_retried(
    tmp_path: Path, broker: None, redis_prefix: str
) -> None:
    # given: a batch of analytics deliveries
    row = signed_up()
    task = registry.get(ANALYTICS).task
    task_id = str(uuid.uuid4())
    request = {"id": task_id, "retries": 0, "hostname": "test-worker", "delivery_info": {"routing_key": "analytics"}}
    items = [Item(request=request, args=(row.to_wire(),))]

    # when: the guards meet the database unavailable
    task.push_request(hostname="test-worker")
    try:
        with database_unreachable(tmp_path):
            answers = task.consume_batch(items)
    finally:
        task.pop_request()

    # then: the message is done with (its retry is scheduled with backoff), not given back whole to come
    # again at once, counted as a worker that died, until dead-lettered as worker_lost
    assert answers == [ACK]
    assert not DeadLetter.objects.exists()
