"""The consumers' compiled statements write and read what the ORM does, on either database.

eventbus/fastpath/inserts.py (the ledger's, analytics' and the result rows' INSERTs),
eventbus/delivery/ledger.history and notifications/recipients.py make their SQL once
and skip the ORM's compilers; each is compared here with the ORM's own rows or
answers. Marked integration so that the production profile runs them on
PostgreSQL too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from analytics.models import AnalyticsEvent
from analytics.recording import record, record_many
from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.delivery import ledger
from eventbus.fastpath.inserts import Insert
from eventbus.models import OutboxEvent, ProcessedEvent
from notifications.recipients import address_of

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

OCCURRED = datetime(2026, 12, 6, 9, 30, 0, 654321, tzinfo=UTC)
ANALYTICS = "analytics.record_event"


def envelope(aggregate: str | None = None, sequence: int = 1) -> Envelope:
    return Envelope.from_dict(
        {
            "id": str(uuid.uuid4()),
            "type": "user.signed_up",
            "version": 1,
            "occurred_at": OCCURRED.isoformat(),
            "aggregate": aggregate or f"user:{uuid.uuid4().hex[:8]}",
            "sequence": sequence,
            "correlation_id": "req-7",
            "causation_id": None,
            "payload": {"user_id": 42},
        }
    )


def columns(model: type, pk: object, *, skip: tuple[str, ...]) -> dict[str, Any]:
    row = model.objects.filter(pk=pk).values().get()
    return {name: value for name, value in row.items() if name not in ("id", *skip)}


@pytest.mark.django_db(transaction=True)  # as in a worker: no transaction of the caller's around it
def test_a_ledger_entry_is_the_row_the_orm_writes_in_one_statement() -> None:
    # given: the same event recorded by the ORM (the single path's claim) and by record()
    theirs, ours = envelope(), envelope()
    assert ledger.claim(theirs, "sub", "task-1", "worker@host") is not None
    ProcessedEvent.objects.filter(event_id=theirs.id).update(runtime_ms=12.5)

    # when
    with CaptureQueriesContext(connection) as queries:
        assert ledger.record(ours, "sub", "task-1", "worker@host", 12.5) is True

    # then: one INSERT, and the same columns but for the event's own id and aggregate
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["INSERT"]
    mine = ProcessedEvent.objects.get(event_id=ours.id)
    theirs_row = ProcessedEvent.objects.get(event_id=theirs.id)
    skip = ("event_id", "aggregate", "processed_at")
    assert columns(ProcessedEvent, mine.pk, skip=skip) == columns(ProcessedEvent, theirs_row.pk, skip=skip)
    assert (mine.event_id, mine.aggregate, mine.outcome) == (ours.id, ours.aggregate, "processed")
    assert abs(mine.processed_at - theirs_row.processed_at) < timedelta(seconds=5)


def test_a_second_entry_for_the_same_event_is_refused_by_the_unique_index() -> None:
    event = envelope()
    assert ledger.record(event, "sub", "task-1", "w", 1.0) is True
    assert ledger.record(event, "sub", "task-2", "w", 1.0) is False
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.claim_many([(envelope(), "t-a"), (event, "t-b")], "sub", "w", 2.0)
    assert ProcessedEvent.objects.filter(subscriber="sub").count() == 1


def test_claim_many_writes_every_row_in_one_insert() -> None:
    events = [envelope(sequence=n) for n in (1, 2, 3)]
    with CaptureQueriesContext(connection) as queries:
        ledger.claim_many([(event, f"task-{n}") for n, event in enumerate(events)], "sub", "w@h", 3.25)
    assert len(queries.captured_queries) == 1
    stored = ProcessedEvent.objects.filter(subscriber="sub").order_by("sequence")
    assert [(row.event_id, row.task_id, row.sequence, row.runtime_ms) for row in stored] == [
        (event.id, f"task-{n}", event.sequence, 3.25) for n, event in enumerate(events)
    ]


def test_analytics_rows_are_the_rows_the_orm_writes() -> None:
    # given: JSON with non-ASCII text, a time with microseconds
    theirs, ours = envelope("user:grüße-1"), envelope("user:grüße-2")
    record(theirs)  # Model.save()

    # when
    with CaptureQueriesContext(connection) as queries:
        record_many([ours])

    # then
    assert len(queries.captured_queries) == 1
    mine = AnalyticsEvent.objects.get(event_id=ours.id)
    reference = AnalyticsEvent.objects.get(event_id=theirs.id)
    skip = ("event_id", "recorded_at", "properties")
    assert columns(AnalyticsEvent, mine.pk, skip=skip) == columns(AnalyticsEvent, reference.pk, skip=skip)
    assert mine.occurred_at == OCCURRED and mine.user_id == 42
    assert mine.properties == {"aggregate": "user:grüße-2", "sequence": 1, "channel": "web"}
    assert reference.properties == {"aggregate": "user:grüße-1", "sequence": 1, "channel": "web"}


def test_a_column_the_row_leaves_out_takes_its_default_and_auto_now_is_always_now() -> None:
    # given: an outbox row with only its event columns (status, lists and attempts are defaults)
    insert = Insert(OutboxEvent)
    event_id = uuid.uuid4()
    before = datetime.now(UTC)

    insert.row(
        {
            "id": event_id,
            "type": "user.signed_up",
            "version": 1,
            "aggregate": "user:1",
            "sequence": 1,
            "occurred_at": OCCURRED,
            "correlation_id": "",
            "payload": {"user_id": 1},
            "created_at": OCCURRED,  # auto_now_add: the insert's time wins, as in Model.save()
        }
    )

    row = OutboxEvent.objects.get(id=event_id)
    assert row.status == OutboxEvent.Status.PENDING and row.dispatch_attempts == 0
    assert row.sent_to == [] and row.deferred_subscribers == [] and row.causation_id is None
    assert row.created_at >= before - timedelta(seconds=1)


def test_an_upsert_updates_the_named_columns_and_keeps_the_rest() -> None:
    upsert = Insert(TaskResult, upsert=(["task_id"], ["status", "result", "date_done"]))
    upsert.row({"task_id": "t-1", "status": "RETRY", "result": "null", "task_name": "first"})
    first = TaskResult.objects.get(task_id="t-1")

    upsert.row({"task_id": "t-1", "status": "SUCCESS", "result": '{"ok": true}', "task_name": "second"})

    row = TaskResult.objects.get(task_id="t-1")
    assert (row.status, row.result, row.task_name) == ("SUCCESS", '{"ok": true}', "first")
    assert row.date_created == first.date_created and row.date_done >= first.date_done
    assert TaskResult.objects.filter(task_id="t-1").count() == 1


def test_an_upsert_on_a_column_the_model_lacks_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="no columns"):
        Insert(TaskResult, upsert=(["task_id"], ["no_such_column"]))


def test_history_reads_what_the_orm_query_reads() -> None:
    # given: ledger rows of the batch's aggregates, of its events, and of others
    subscription = registry.get(ANALYTICS)
    first, again, elsewhere = envelope("user:a", 1), envelope("user:a", 2), envelope("user:b", 1)
    unrelated = envelope("user:c", 1)
    ledger.record(first, ANALYTICS, "t1", "w", 1.0)
    ledger.record(elsewhere, ANALYTICS, "t2", "w", 1.0)
    ledger.record(unrelated, ANALYTICS, "t3", "w", 1.0)
    ledger.record(again, "another.subscriber", "t4", "w", 1.0)
    batch = [again, elsewhere, envelope("user:d", 1)]

    # when
    with CaptureQueriesContext(connection) as queries:
        ours = ledger.history(batch, subscription)

    # then: one query, the ORM's rows, as the ORM returns them (UUIDs, ints)
    assert len(queries.captured_queries) == 1
    theirs = ProcessedEvent.objects.filter(subscriber=ANALYTICS).filter(
        Q(aggregate__in={event.aggregate for event in batch}) | Q(event_id__in=[event.id for event in batch])
    )
    expected = sorted(theirs.values_list("event_id", "aggregate", "sequence"), key=str)
    assert sorted(ours, key=str) == expected
    assert sorted(ours, key=str) == sorted([(first.id, "user:a", 1), (elsewhere.id, "user:b", 1)], key=str)
    assert all(isinstance(event_id, uuid.UUID) for event_id, _, _ in ours)


def test_a_welcome_email_reads_the_address_in_one_query_and_none_for_a_deleted_user() -> None:
    user = get_user_model().objects.create_user(username="reader@example.com", email="reader@example.com")
    with CaptureQueriesContext(connection) as queries:
        assert address_of(user.pk) == "reader@example.com"
    assert len(queries.captured_queries) == 1
    user.delete()
    assert address_of(user.pk) is None
