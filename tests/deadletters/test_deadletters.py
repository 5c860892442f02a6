"""Dead letters, captured: the failure's id and wire form, the idempotent store, publish and fallback.

Also holds the small builders the other test_deadletters_* files import.
"""

from __future__ import annotations

import base64
import hashlib
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


# --- the body cap (EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES) -------------------------


def test_a_body_over_the_cap_is_kept_as_a_preview_with_its_length_and_hash(settings: Any) -> None:
    # given: a cap of 1 KiB, and an envelope of about 3 KiB with a character of two bytes
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = 1024
    body = envelope(payload={"user_id": 7, "note": "é" * 1500})
    whole = json.dumps(body, separators=(",", ":")).encode()

    made = failure(body=body)

    # then: a preview of at most the cap, cut on a character, and the whole described
    assert made.body is None and made.body_truncated
    assert made.raw_body is not None and len(made.raw_body.encode()) <= 1024
    assert whole.decode().startswith(made.raw_body) and len(made.raw_body.encode()) >= 1023
    assert (made.body_length, made.body_sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    # the event is still named, as for a whole body
    assert (str(made.event_id), made.event_type) == (body["id"], "user.signed_up")


def test_a_raw_body_over_the_cap_is_cut_and_one_under_it_is_kept_whole(settings: Any) -> None:
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = 1024
    big = failure(body=None, raw_body="x" * 5000, task_id="")
    assert (big.raw_body, big.body_length) == ("x" * 1024, 5000)
    assert big.body_sha256 == hashlib.sha256(b"x" * 5000).hexdigest()

    small = failure(body=None, raw_body="x" * 1024, task_id="")
    assert (small.raw_body, small.body_length, small.body_sha256) == ("x" * 1024, None, "")
    assert not small.body_truncated and failure().body_length is None


def test_a_cut_body_round_trips_through_the_wire_and_the_store(settings: Any, db: None) -> None:
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = 1024
    made = failure(body=None, raw_body="y" * 3000, task_id="")
    # the id comes from the hash of the whole, not from the preview
    assert made.id != failure(body=None, raw_body="y" * 3001, task_id="").id

    again = DeadLetterFailure.from_wire(json.loads(json.dumps(made.to_wire())))
    assert again == made

    row, _ = store(again)
    row.refresh_from_db()
    assert (row.raw_body, row.body_length, row.body_sha256) == ("y" * 1024, 3000, made.body_sha256)
    assert row.body_truncated


def test_the_ops_page_and_the_admin_show_the_preview_and_say_it_was_cut(settings: Any, admin_client: Any) -> None:
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = 1024
    row, _ = store(failure(kind=Kind.POISON, body=None, raw_body="<b>" + "w" * 20_000, task_id=""))

    page = admin_client.get(f"/ops/deadletters/{row.pk}/")
    admin_page = admin_client.get(f"/admin/eventbus/deadletter/{row.pk}/change/")

    for response in (page, admin_page):
        assert response.status_code == 200
        assert row.body_sha256 in response.text and "20003" in response.text
        assert "w" * 1021 in response.text and "w" * 1022 not in response.text  # the preview, not the whole
        assert "&lt;b&gt;" in response.text  # escaped, never rendered as markup
    assert "Cut when stored" in page.text and "cannot be replayed" in page.text
    assert "the raw body shows its first 1024 of 20003 bytes" in admin_page.text


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
