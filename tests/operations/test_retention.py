"""Retention (eventbus/operations/retention.py): what each table keeps, bounded runs, the start check, and effects
that stay once when a purge runs beside a real worker and an old event is delivered or replayed again."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.beat import PersistentScheduler
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult
from kombu import Connection

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.deadletters import operations
from eventbus.models import AggregateSequence, DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.operations import checks as safety
from eventbus.operations import retention, retention_tables
from eventbus.operations.reconcile import reconcile
from project import queues
from project.celery import app as celery_app
from telemetry.models import Device, Rollup
from tests.conftest import drain_messages, queue_length, running_worker, wait_for
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import sign_up_via_client

pytestmark = pytest.mark.database

WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"
Status = OutboxEvent.Status


def days_ago(days: float) -> Any:
    return timezone.now() - timedelta(days=days)


def outbox_row(age_days: float, status: str = Status.DISPATCHED, **fields: Any) -> OutboxEvent:
    row = OutboxEvent.objects.create(
        type="user.signed_up",
        version=1,
        aggregate=f"user:{uuid.uuid4().hex[:8]}",
        sequence=1,
        occurred_at=days_ago(age_days),
        payload={"user_id": 1},
        status=status,
        **fields,
    )
    OutboxEvent.objects.filter(pk=row.pk).update(created_at=days_ago(age_days))
    return row


def ledger_row(event_id: object, age_days: float, subscriber: str = ANALYTICS) -> ProcessedEvent:
    row = ProcessedEvent.objects.create(
        event_id=event_id, subscriber=subscriber, event_type="user.signed_up", aggregate="user:1", sequence=1
    )
    ProcessedEvent.objects.filter(pk=row.pk).update(processed_at=days_ago(age_days))
    return row


# --- what each table keeps ----------------------------------------------------


@pytest.mark.django_db
def test_the_outbox_keeps_what_the_relay_and_the_reconciler_still_read(settings: Any) -> None:
    settings.EVENTBUS_OUTBOX_RETENTION_DAYS = 7
    # given: old rows in every state, and a recent one
    settled = outbox_row(8, last_sent_at=days_ago(8), settled_at=days_ago(8))
    sent_to_nobody = outbox_row(8)
    kept = {
        outbox_row(8, Status.PENDING).pk: "pending: the relay still sends it",
        outbox_row(8, Status.DEFERRED, last_sent_at=days_ago(8)).pk: "deferred: a subscriber still waits for it",
        outbox_row(8, last_sent_at=days_ago(8)).pk: "unsettled: the reconciler still reads it",
        outbox_row(6, last_sent_at=days_ago(6), settled_at=days_ago(6)).pk: "within the retention",
    }

    # when
    deleted = retention.purge(retention.get("eventbus.outbox"))

    # then
    assert deleted == 2
    assert not OutboxEvent.objects.filter(pk__in=[settled.pk, sent_to_nobody.pk]).exists()
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == set(kept)


@pytest.mark.django_db
def test_a_ledger_row_goes_only_once_its_outbox_row_and_dead_letters_are_gone(settings: Any) -> None:
    settings.EVENTBUS_LEDGER_RETENTION_DAYS = 30
    # given: old ledger rows whose event has nothing left, an outbox row, or a dead letter; and a recent one
    alone = ledger_row(uuid.uuid4(), 31)
    with_outbox_row = ledger_row(outbox_row(31, last_sent_at=days_ago(31)).pk, 31)
    replayable = dead_letter(age=timedelta(days=20))
    with_dead_letter = ledger_row(replayable.event_id, 31)
    recent = ledger_row(uuid.uuid4(), 29)

    # when
    deleted = retention.purge(retention.get("eventbus.ledger"))

    # then
    assert deleted == 1
    assert not ProcessedEvent.objects.filter(pk=alone.pk).exists()
    assert set(ProcessedEvent.objects.values_list("pk", flat=True)) == {
        with_outbox_row.pk,
        with_dead_letter.pk,
        recent.pk,
    }


@pytest.mark.django_db
def test_a_run_deletes_a_bounded_number_of_chunks(settings: Any) -> None:
    settings.EVENTBUS_TIMELINE_RETENTION_DAYS = 30
    DeliveryStep.objects.bulk_create(
        DeliveryStep(event_id=uuid.uuid4(), subscriber=ANALYTICS, step=DeliveryStep.Step.RETRIED) for _ in range(25)
    )
    DeliveryStep.objects.update(at=days_ago(31))
    entry = retention.get("eventbus.timeline")

    assert retention.purge(entry, chunk=10, max_chunks=2) == 20, "two chunks of ten, then the run stops"
    assert retention.purge(entry, chunk=10, max_chunks=2) == 5
    assert retention.purge(entry, chunk=10, max_chunks=2) == 0


@pytest.mark.django_db
def test_the_task_purges_what_the_apps_registered_by_their_own_settings(settings: Any) -> None:
    settings.ANALYTICS_RETENTION_DAYS = 365
    settings.TELEMETRY_ROLLUP_RETENTION_DAYS = 90
    # given: analytics rows and rollups on either side of their retention, and an aggregate's counter
    old, new = (
        AnalyticsEvent.objects.create(event_id=uuid.uuid4(), type="user.signed_up", occurred_at=days_ago(age))
        for age in (366, 364)
    )
    device = Device.objects.create(name="d1", token_hash="0" * 64)
    for age in (91, 89):
        Rollup.objects.create(
            device=device,
            metric="t",
            minute=days_ago(age),
            count=1,
            total=1.0,
            minimum=1.0,
            maximum=1.0,
            updated_at=days_ago(age),
        )
    AggregateSequence.objects.create(aggregate="user:1", last_sequence=3)

    # when: beat's task runs (called in this process: the worker's run is the integration test below)
    celery_app.tasks["eventbus.purge_expired"].run()

    # then: each table by its own setting; the counter is never purged
    assert list(AnalyticsEvent.objects.values_list("pk", flat=True)) == [new.pk]
    assert old.pk != new.pk
    assert Rollup.objects.get().minute > days_ago(90)
    assert AggregateSequence.objects.get().last_sequence == 3


# --- Celery's result rows -------------------------------------------------------


@pytest.mark.django_db
def test_result_rows_expire_through_celerys_own_backend_cleanup_and_beat_runs_it(tmp_path: Path) -> None:
    # given: beat's schedule as `celery beat -s file` builds it
    assert celery_app.backend.supports_autoexpire is False, "why Celery schedules celery.backend_cleanup at all"
    scheduler = PersistentScheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"), lazy=False)
    try:
        cleanup = scheduler.schedule["celery.backend_cleanup"]
        assert cleanup.task == "celery.backend_cleanup"
        # ours, every ten minutes on the eventbus queue, not Celery's default once a day at 4 am
        assert cleanup.schedule.run_every == timedelta(seconds=600)
        assert cleanup.options["queue"] == queues.EVENTBUS
        assert "eventbus.purge_expired" in scheduler.schedule
    finally:
        scheduler.close()
    # and rows on either side of CELERY_RESULT_EXPIRES
    expires = celery_app.conf.result_expires
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
    for task_id, age in (("old", seconds + 60), ("new", seconds - 60)):
        TaskResult.objects.create(task_id=task_id, status="SUCCESS")
        TaskResult.objects.filter(task_id=task_id).update(date_done=timezone.now() - timedelta(seconds=age))

    # when: Celery's built-in task runs
    celery_app.tasks["celery.backend_cleanup"].run()

    # then
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]


# --- the start check --------------------------------------------------------------


@pytest.mark.django_db
def test_the_start_check_refuses_a_ledger_kept_shorter_than_a_late_copy_can_arrive(settings: Any) -> None:
    assert not [p for p in safety.problems(celery_app.conf) if "RETENTION" in p], "the defaults are safe"

    # thirty starts of an hour each: a late copy can arrive 30 h after the effect, the ledger keeps a day
    settings.EVENTBUS_MAX_DELIVERIES = 30
    settings.EVENTBUS_LEDGER_RETENTION_DAYS = 1
    (problem,) = [p for p in safety.problems(celery_app.conf) if "EVENTBUS_LEDGER_RETENTION_DAYS" in p]
    assert "take effect twice" in problem
    assert "at least 2" in problem, problem

    settings.EVENTBUS_LEDGER_RETENTION_DAYS = 2
    assert not [p for p in safety.problems(celery_app.conf) if "EVENTBUS_LEDGER_RETENTION_DAYS" in p]


@pytest.mark.django_db
def test_the_start_check_refuses_a_timeline_the_reconciler_would_miss(settings: Any) -> None:
    settings.EVENTBUS_REDELIVER_AFTER = 2 * 86400.0
    settings.EVENTBUS_TIMELINE_RETENTION_DAYS = 1
    assert [p for p in retention_tables.problems(3600.0) if "EVENTBUS_TIMELINE_RETENTION_DAYS" in p]


# --- the command ----------------------------------------------------------------


@pytest.mark.django_db
def test_expired_sessions_go_once_expired_for_a_session_age_and_live_ones_stay(settings: Any) -> None:
    settings.SESSION_COOKIE_AGE = 3600
    # given: a session expired two session ages ago, one expired a moment ago, one still live
    for key, expired_for in (("long-gone", 7200), ("just-expired", 60), ("live", -600)):
        Session.objects.create(
            session_key=key, session_data="", expire_date=timezone.now() - timedelta(seconds=expired_for)
        )

    # when: beat's task runs
    celery_app.tasks["eventbus.purge_expired"].run()

    # then: only the one expired for longer than a session lives is gone
    assert sorted(Session.objects.values_list("session_key", flat=True)) == ["just-expired", "live"]


@pytest.mark.django_db
def test_the_command_prints_every_table_with_its_rows_oldest_row_and_retention(settings: Any) -> None:
    settings.EVENTBUS_TIMELINE_RETENTION_DAYS = 30
    DeliveryStep.objects.create(event_id=uuid.uuid4(), subscriber=ANALYTICS, step=DeliveryStep.Step.RETRIED)
    DeliveryStep.objects.update(at=days_ago(40))

    out = io.StringIO()
    call_command("retention", stdout=out)
    lines = out.getvalue().splitlines()

    for entry in retention.entries():
        assert any(line.startswith(entry.table + " ") for line in lines), entry.table
    timeline = next(line.split() for line in lines if line.startswith("eventbus.timeline "))
    assert timeline[1:3] == ["1", f"{days_ago(40):%Y-%m-%d}"]
    assert timeline[6:8] == ["1", "30"], "one row expired, kept 30 days"
    assert "EVENTBUS_TIMELINE_RETENTION_DAYS" in timeline

    out = io.StringIO()
    call_command("retention", "--purge", stdout=out)
    assert "eventbus.timeline 1" in out.getvalue()
    assert not DeliveryStep.objects.exists()


# --- under load, with a real worker -------------------------------------------------


def republish(messages: list[tuple[str, Any]]) -> None:
    """Put these messages back on their queues as they were taken off: body, headers and content type."""
    with Connection(celery_app.conf.broker_url, transport_options=celery_app.conf.broker_transport_options) as conn:
        producer = conn.Producer()
        for queue, message in messages:
            producer.publish(
                message.body,
                exchange=queue,
                routing_key=queue,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                correlation_id=message.properties.get("correlation_id"),
                reply_to=message.properties.get("reply_to"),
            )


def emails_to(sink: SmtpSink, address: str) -> int:
    return sum(1 for received in sink.messages if address in received.rcpt_tos)


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_purges_under_load_leave_one_effect_for_a_redelivery_and_a_replay_of_an_old_event(
    broker: None, smtp_sink: SmtpSink, settings: Any
) -> None:
    client = Client()
    # given: A's messages, taken off the broker as they were sent (re-sent raw later)
    assert sign_up_via_client(client, email="a@example.com").status_code == 302
    captured = [(q, m) for q in (queues.NOTIFICATIONS, queues.ANALYTICS) for m in drain_messages(q)]
    assert len(captured) == 2
    republish(captured)
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS, queues.EVENTBUS, concurrency=4):
        # and B and C signed up too, every delivery done and settled
        for email in ("b@example.com", "c@example.com"):
            assert sign_up_via_client(client, email=email).status_code == 302
        wait_for(lambda: ProcessedEvent.objects.count() == 6 and len(smtp_sink.messages) == 3, what="A, B, C done")
        reconcile(redeliver_after=0)
        a, b, c = (OutboxEvent.objects.get(payload__user_id=user.pk) for user in _users("a", "b", "c"))
        assert OutboxEvent.objects.filter(settled_at__isnull=False).count() == 3
        # and time has passed: all three are past the outbox retention (7 days); A's effects within the
        # ledger's (30 days), B's and C's past it; B's analytics delivery has a dead letter, 20 days old
        # (a copy that failed after the effect), which can still be replayed
        OutboxEvent.objects.update(created_at=days_ago(40))
        ProcessedEvent.objects.filter(event_id=a.pk).update(processed_at=days_ago(10))
        ProcessedEvent.objects.filter(event_id__in=[b.pk, c.pk]).update(processed_at=days_ago(40))
        replayable = dead_letter(age=timedelta(days=20), body=b.to_wire())
        # and a backlog of old timeline steps, so the purge has work of its own
        DeliveryStep.objects.bulk_create(
            DeliveryStep(event_id=uuid.uuid4(), subscriber=ANALYTICS, step=DeliveryStep.Step.RETRIED, detail="backlog")
            for _ in range(3000)
        )
        DeliveryStep.objects.filter(detail="backlog").update(at=days_ago(40))

        # when: sign-ups go on while beat's purge runs in the same worker, several times
        for n in range(6):
            assert sign_up_via_client(client, email=f"load{n}@example.com").status_code == 302
            celery_app.send_task("eventbus.purge_expired", queue=queues.EVENTBUS)
        wait_for(
            lambda: (
                not OutboxEvent.objects.filter(pk__in=[a.pk, b.pk, c.pk]).exists()
                and not DeliveryStep.objects.filter(detail="backlog").exists()
                and not ProcessedEvent.objects.filter(event_id=c.pk).exists()
            ),
            timeout=60,
            what="the purge of the old rows",
        )
        wait_for(
            lambda: (
                len(smtp_sink.messages) == 9
                and ProcessedEvent.objects.exclude(event_id__in=[a.pk, b.pk, c.pk]).count() == 12
            ),
            what="the load done",
        )

        # then: what can still deliver or replay A and B finds their ledger rows
        assert ProcessedEvent.objects.filter(event_id=a.pk).count() == 2, "within the ledger's retention"
        assert ProcessedEvent.objects.filter(event_id=b.pk).count() == 2, "its dead letter can still be replayed"

        # when: A's old messages arrive again, raw, and an operator replays B's dead letter
        republish(captured)
        operations.replay([DeadLetter.objects.get(pk=replayable.pk)], by="ops")

        # then: three deliveries, each skipped by the ledger; one effect each
        wait_for(
            lambda: (
                (counters.read(counters.DUPLICATES).get(WELCOME), counters.read(counters.DUPLICATES).get(ANALYTICS))
                == (1, 2)
            ),
            what="A's two messages and B's replay skipped as duplicates",
        )
        wait_for(
            lambda: queue_length(queues.NOTIFICATIONS) == 0 and queue_length(queues.ANALYTICS) == 0,
            what="every message consumed",
        )
    assert emails_to(smtp_sink, "a@example.com") == 1
    assert len(smtp_sink.messages) == 9, "one welcome email per sign-up, none twice"
    for event in (a, b):
        assert AnalyticsEvent.objects.filter(event_id=event.pk).count() == 1
    assert ProcessedEvent.objects.count() == 16, "C's two rows purged; no row added by a duplicate"


def _users(*names: str) -> list[Any]:
    from django.contrib.auth import get_user_model

    return [get_user_model().objects.get(email=f"{name}@example.com") for name in names]
