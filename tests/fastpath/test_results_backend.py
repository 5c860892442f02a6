"""Celery's result rows in one upsert each (eventbus/fastpath/results.py), on the test database."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import states
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from devinbox.sink import SmtpSink
from eventbus.fastpath import results
from eventbus.fastpath.gatherer import Gatherer
from eventbus.fastpath.results import UpsertDatabaseBackend
from eventbus.models import ProcessedEvent
from eventbus.outbox.publish import publish
from project import queues
from project.celery import app as celery_app
from signups.events import UserSignedUp
from tests.conftest import wait_for, worker_env, worker_process

WELCOME = "notifications.send_welcome_email"

pytestmark = pytest.mark.django_db(transaction=True)


class Request:
    """What a worker's task request carries into the result row (CELERY_RESULT_EXTENDED)."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.task = "notifications.send_welcome_email"
        self.argsrepr = "({'id': '1', 'payload': '...'},)"
        self.kwargsrepr = "{}"
        self.hostname = "notifications@host"
        self.meta = {"queue": "notifications"}
        self.children: list[object] = []
        self.ignore_result = False
        self.group = None
        self.chord = None
        self.parent_id = None
        self.root_id = task_id
        self.periodic_task_name = None


def test_the_project_stores_results_with_the_upsert_backend() -> None:
    assert isinstance(celery_app.backend, UpsertDatabaseBackend)


def test_a_result_is_one_statement_and_a_later_state_replaces_it_keeping_its_creation_time() -> None:
    backend = celery_app.backend
    task_id = str(uuid.uuid4())
    request = Request(task_id)

    # when: a retry's state, then the success
    with CaptureQueriesContext(connection) as first:
        backend.store_result(task_id, None, states.RETRY, traceback="Traceback: flaky", request=request)
    created = TaskResult.objects.get(task_id=task_id).date_created
    with CaptureQueriesContext(connection) as second:
        backend.store_result(task_id, {"status": "processed"}, states.SUCCESS, request=request)

    # then: one INSERT ... ON CONFLICT each, and one row with the later state
    assert [q["sql"].split()[0] for q in first.captured_queries] == ["INSERT"]
    assert [q["sql"].split()[0] for q in second.captured_queries] == ["INSERT"]
    assert "ON CONFLICT" in second.captured_queries[0]["sql"]
    row = TaskResult.objects.get(task_id=task_id)
    assert row.status == states.SUCCESS and row.traceback is None
    assert json.loads(row.result) == {"status": "processed"}
    assert row.date_created == created and row.date_done >= created
    # the extended fields, as django-celery-results' own backend writes them
    assert (row.task_name, row.worker) == ("notifications.send_welcome_email", "notifications@host")
    assert json.loads(row.task_args) == request.argsrepr
    assert json.loads(row.meta)["queue"] == "notifications"
    # and Celery reads it back the usual way
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS


@pytest.fixture
def gathered(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Gatherer[Any]:
    """This test's own result gatherer, whose thread would wait a minute: the test flushes it."""
    gatherer: Gatherer[Any] = Gatherer("test-results", results._write, failure="test")
    monkeypatch.setattr(results, "GATHERED", gatherer)
    settings.EVENTBUS_RESULT_BATCH_SECONDS = 60
    return gatherer


def test_success_rows_are_gathered_and_written_in_one_statement_other_states_at_once(gathered: Gatherer[Any]) -> None:
    backend = celery_app.backend
    done = [str(uuid.uuid4()) for _ in range(3)]
    retried = str(uuid.uuid4())

    # when: three tasks succeed, and one is retried
    for task_id in done:
        backend.store_result(task_id, {"status": "processed"}, states.SUCCESS, request=Request(task_id))
    backend.store_result(retried, None, states.RETRY, traceback="Traceback: flaky", request=Request(retried))

    # then: the retry's row is there at once; the successes wait for the gatherer
    assert TaskResult.objects.get(task_id=retried).status == states.RETRY
    assert not TaskResult.objects.filter(task_id__in=done).exists()
    assert gathered.pending() == 3

    # when: the retried task succeeds too (twice: a duplicate delivery of the same task), and the gatherer writes
    created = TaskResult.objects.get(task_id=retried).date_created
    for _ in range(2):
        backend.store_result(retried, {"status": "processed"}, states.SUCCESS, request=Request(retried))
    with CaptureQueriesContext(connection) as queries:
        assert results.GATHERED.flush() == 5

    # then: one statement wrote a row per task, each with its last state
    assert len(queries.captured_queries) == 1
    rows = {row.task_id: row for row in TaskResult.objects.filter(task_id__in=[*done, retried])}
    assert sorted(rows) == sorted([*done, retried])
    assert {row.status for row in rows.values()} == {states.SUCCESS}
    assert rows[retried].date_created == created and rows[retried].traceback is None
    assert json.loads(rows[done[0]].result) == {"status": "processed"}
    assert gathered.pending() == 0


@pytest.mark.integration
@pytest.mark.parametrize("ending", ["warm shutdown", "pool process killed"])
def test_a_pool_process_writes_its_gathered_rows_when_it_stops_and_a_killed_one_loses_only_those(
    ending: str, broker: None, smtp_sink: SmtpSink
) -> None:
    # given: a worker whose processes would gather result rows for a minute, and a user to welcome
    user = get_user_model().objects.create_user(username="gathered@example.com", email="gathered@example.com")
    env = worker_env(EVENTBUS_RESULT_BATCH_SECONDS="60")
    with worker_process(queues.NOTIFICATIONS, concurrency=1, name="results", env=env) as worker:
        with transaction.atomic():
            publish(UserSignedUp(user_id=user.pk, channel="web"), aggregate=f"user:{user.pk}")
        wait_for(lambda: ProcessedEvent.objects.filter(subscriber=WELCOME).exists(), timeout=30, what="the email")
        task_id = ProcessedEvent.objects.get(subscriber=WELCOME).task_id
        time.sleep(0.5)  # the task is over; its row waits in the pool process
        assert not TaskResult.objects.filter(task_id=task_id).exists()
        if ending == "pool process killed":
            pool = pool_processes(worker.pid)
            assert len(pool) == 1, pool
            os.kill(pool[0], signal.SIGKILL)
            wait_for(lambda: pool[0] not in pool_processes(worker.pid), timeout=30, what="a new pool process")

    # then: an orderly stop wrote the row; a killed process lost it, and only it
    assert len(smtp_sink.messages) == 1
    assert ProcessedEvent.objects.filter(subscriber=WELCOME).count() == 1
    written = TaskResult.objects.filter(task_id=task_id, status=states.SUCCESS).exists()
    assert written is (ending == "warm shutdown")


def pool_processes(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc: the worker's pool processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                children.append(int(entry))
    return children
