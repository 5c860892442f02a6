"""The outbox's prepared statements (eventbus/fastpath/statements.py) write what the ORM writes, on either database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from eventbus.delivery import ledger
from eventbus.fastpath import statements
from eventbus.models import OutboxEvent, ProcessedEvent

# Marked integration so that the production profile runs them on PostgreSQL too.
pytestmark = [pytest.mark.django_db, pytest.mark.integration]

OCCURRED = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "type": "user.signed_up",
        "version": 1,
        "aggregate": f"user:{uuid.uuid4().hex[:8]}",
        "sequence": 1,
        "occurred_at": OCCURRED,
        "correlation_id": "req-1",
        "causation_id": None,
        "payload": {"user_id": 7, "nested": {"list": [1, "two", None], "unicode": "grüße"}},
    }
    return values | overrides


def stored(event_id: object) -> dict[str, Any]:
    row = OutboxEvent.objects.filter(id=event_id).values().get()
    return {k: v for k, v in row.items() if k not in {"id", "aggregate", "created_at"}}


def test_the_prepared_insert_writes_the_row_create_writes_in_one_statement() -> None:
    theirs = OutboxEvent.objects.create(**fields())
    ours = fields()
    assert set(ours) == set(statements.EVENT_COLUMNS)

    with CaptureQueriesContext(connection) as queries:
        statements.insert(ours)

    assert len(queries.captured_queries) == 1
    assert stored(ours["id"]) == stored(theirs.id)
    saved = OutboxEvent.objects.get(id=ours["id"])
    assert saved.aggregate == ours["aggregate"]
    assert abs(saved.created_at - theirs.created_at) < timedelta(seconds=5)
    assert saved.payload["nested"] == {"list": [1, "two", None], "unicode": "grüße"}
    assert saved.status == OutboxEvent.Status.PENDING and saved.sent_to == [] and saved.deferred_subscribers == []


@pytest.mark.parametrize("sent_to", [["analytics.record_event", "notifications.send_welcome_email"], []])
def test_the_prepared_mark_is_settles_update_and_leaves_a_dispatched_row_alone(sent_to: list[str]) -> None:
    lease = {"lease_owner": "relay-1", "lease_until": OCCURRED, "last_error": "boom", "deferred_subscribers": ["x"]}
    theirs = OutboxEvent.objects.create(**fields(), **lease)
    ours = [OutboxEvent.objects.create(**fields(), **lease) for _ in range(2)]
    now = datetime(2026, 12, 3, 12, 0, 1, tzinfo=UTC)
    OutboxEvent.objects.filter(id=theirs.id).update(
        status=OutboxEvent.Status.DISPATCHED,
        dispatched_at=now,
        dispatch_attempts=F("dispatch_attempts") + 1,
        deferred_subscribers=[],
        last_error="",
        lease_owner="",
        lease_until=None,
        sent_to=sent_to,
        last_sent_at=now if sent_to else None,
        settled_at=None if sent_to else now,
    )

    with CaptureQueriesContext(connection) as queries:
        statements.mark_dispatched([str(row.id) for row in ours], sent_to, now)

    assert len(queries.captured_queries) == 1
    assert stored(ours[0].id) == stored(ours[1].id) == stored(theirs.id)
    # a second mark (a duplicate dispatch) changes nothing: the row is dispatched already
    statements.mark_dispatched([str(ours[0].id)], sent_to, now + timedelta(seconds=5))
    assert stored(ours[0].id) == stored(theirs.id)
    assert OutboxEvent.objects.get(id=ours[0].id).dispatch_attempts == 1


def test_the_ledger_is_asked_with_one_prepared_select() -> None:
    done = ProcessedEvent.objects.create(
        event_id=uuid.uuid4(), subscriber="s", event_type="user.signed_up", aggregate="user:1", sequence=1
    )
    with CaptureQueriesContext(connection) as queries:
        answers = [
            ledger.has_processed(done.event_id, "s"),
            ledger.has_processed(str(done.event_id), "s"),
            ledger.has_processed(done.event_id, "other"),
            ledger.has_processed(uuid.uuid4(), "s"),
        ]
    assert answers == [True, True, False, False]
    assert len(queries.captured_queries) == 4
