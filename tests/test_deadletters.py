"""Dead letters, captured: the failure's id and wire form, the idempotent store, publish and fallback.

Also holds the small builders the other test_deadletters_* files import.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from eventbus.deadletters import DeadLetterFailure, Kind, send_to_dead_letter
from eventbus.deadletters.store import store
from eventbus.models import DeadLetter
from eventbus.redis import client as redis_client
from eventbus.tasks import store_dead_letter
from project import queues
from tests.brokers import using_broker

ANALYTICS = "analytics.record_event"


def envelope(user_id: int = 7, **overrides: Any) -> dict[str, Any]:
    """A valid ``user.signed_up`` envelope in its wire form."""
    wire = {
        "id": str(uuid.uuid4()),
        "type": "user.signed_up",
        "version": 1,
        "occurred_at": "2026-01-02T03:04:05Z",
        "aggregate": f"user:{user_id}",
        "sequence": 1,
        "correlation_id": uuid.uuid4().hex,
        "causation_id": None,
        "payload": {"user_id": user_id},
    }
    wire.update(overrides)
    return wire


def failure(**overrides: Any) -> DeadLetterFailure:
    body = overrides.pop("body") if "body" in overrides else envelope()
    values: dict[str, Any] = {
        "kind": Kind.RETRIES_EXHAUSTED,
        "queue": queues.ANALYTICS,
        "exception_type": "builtins.ConnectionError",
        "exception_message": "database went away",
        "traceback": "Traceback (most recent call last):\n  ...\nConnectionError: database went away\n",
        "body": body,
        "subscriber": ANALYTICS,
        "task_name": ANALYTICS,
        "task_id": str(uuid.uuid4()),
        "attempts": 9,
        "first_failed_at": timezone.now() - timedelta(minutes=10),
        "last_failed_at": timezone.now(),
        "event_id": uuid.UUID(body["id"]) if isinstance(body, dict) and "id" in body else None,
        "event_type": body.get("type", "") if isinstance(body, dict) else "",
    }
    values.update(overrides)
    return DeadLetterFailure(**values)


def dead_letter(age: timedelta = timedelta(0), **overrides: Any) -> DeadLetter:
    """A stored DeadLetter row, made through the real store, whose last failure was ``age`` ago."""
    row, _ = store(failure(last_failed_at=timezone.now() - age, **overrides))
    return row


def queued(queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting on ``queue`` in Redis: headers and decoded body, oldest first."""
    raw = redis_client().lrange(settings.REDIS_KEY_PREFIX + queue, 0, -1)
    messages = []
    for item in reversed(raw):  # kombu LPUSHes and BRPOPs: the oldest is last
        message = json.loads(item)
        body = base64.b64decode(message["body"]) if message["properties"].get("body_encoding") == "base64" else None
        messages.append({"headers": message["headers"], "body": json.loads(body or message["body"])})
    return messages


# --- the failure ---------------------------------------------------------------


def test_the_id_is_deterministic_per_delivery_and_kind() -> None:
    one = failure(task_id="t-1", attempts=3)
    assert one.id == failure(task_id="t-1", attempts=3, exception_message="other words").id
    assert one.id != failure(task_id="t-1", attempts=4).id
    assert one.id != failure(task_id="t-1", attempts=3, kind=Kind.PERMANENT).id
    assert one.id != failure(task_id="t-2", attempts=3).id


def test_a_message_without_task_id_is_identified_by_its_body_and_queue() -> None:
    raw = {"task_id": "", "body": None, "raw_body": "not json"}
    assert failure(**raw).id == failure(**raw).id
    assert failure(**raw).id != failure(**{**raw, "raw_body": "other"}).id
    assert failure(**raw).id != failure(**raw, queue=queues.NOTIFICATIONS).id


def test_the_wire_form_round_trips_through_json() -> None:
    original = failure()
    wire = json.loads(json.dumps(original.to_wire()))
    assert DeadLetterFailure.from_wire(wire) == original


def test_an_altered_wire_message_is_refused() -> None:
    wire = failure().to_wire()
    wire["task_id"] = "someone-else"
    with pytest.raises(ValueError, match="does not match"):
        DeadLetterFailure.from_wire(wire)


def test_from_exception_takes_type_message_traceback_and_event_identity() -> None:
    body = envelope()
    try:
        raise ConnectionError("smtp refused")
    except ConnectionError as exc:
        made = DeadLetterFailure.from_exception(
            Kind.RETRIES_EXHAUSTED, exc, queue=queues.NOTIFICATIONS, body=body, task_id="t", attempts=9
        )
    assert (made.exception_type, made.exception_message) == ("ConnectionError", "smtp refused")
    assert "raise ConnectionError" in made.traceback
    assert (made.event_id, made.event_type) == (uuid.UUID(body["id"]), "user.signed_up")


def test_a_body_that_is_not_json_ready_is_kept_as_text() -> None:
    made = failure(body={"when": datetime(2026, 1, 1, tzinfo=UTC)})
    assert made.body is None
    assert "datetime" in (made.raw_body or "")


def test_a_huge_traceback_is_cut_keeping_its_end() -> None:
    made = failure(traceback="frame\n" * 10_000 + "TheError: why")
    assert len(made.traceback) <= 20_000
    assert made.traceback.endswith("TheError: why")


# --- the store -----------------------------------------------------------------


@pytest.mark.django_db
def test_storing_the_same_failure_twice_keeps_one_row() -> None:
    made = failure()
    first, created_first = store(made)
    second, created_second = store(made)
    assert (created_first, created_second) == (True, False)
    assert first.pk == second.pk == made.id
    assert DeadLetter.objects.count() == 1
    assert first.body == made.body and first.subscriber == ANALYTICS and first.attempts == 9


@pytest.mark.django_db
def test_the_store_task_stores_the_wire_form_and_ignores_a_malformed_one() -> None:
    made = failure()
    store_dead_letter.run(json.loads(json.dumps(made.to_wire())))
    store_dead_letter.run({"v": 1, "id": "nonsense"})
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [made.id]


@pytest.mark.django_db
def test_a_raw_body_with_nul_bytes_is_storable() -> None:
    row, _ = store(failure(body=None, raw_body="\x80\x04\x00pickle", task_id=""))
    row.refresh_from_db()
    assert row.raw_body == "\x80\x04\\x00pickle"
    assert row.body is None


# --- capture: the broker, or the database -------------------------------------


@pytest.mark.django_db
def test_send_to_dead_letter_publishes_one_message_for_the_store_task(broker: None) -> None:
    made = failure()
    send_to_dead_letter(made)
    (message,) = queued(queues.DEAD_LETTER)
    assert message["headers"]["task"] == "eventbus.store_dead_letter"
    args, kwargs, _ = message["body"]
    assert args == [made.to_wire()] and kwargs == {}
    # Published, not stored: storing is the dead_letter worker's job.
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
def test_when_the_broker_refuses_the_dead_letter_is_written_to_the_database(caplog: pytest.LogCaptureFixture) -> None:
    made = failure()
    with using_broker("redis://127.0.0.1:1/0"):  # nothing listens on port 1
        send_to_dead_letter(made)
    assert DeadLetter.objects.get().pk == made.id
    assert "storing it directly" in caplog.text
