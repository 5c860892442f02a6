"""Celery's result rows in one upsert each (eventbus/results.py), on the test database."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import states
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from eventbus.results import UpsertDatabaseBackend
from project.celery import app as celery_app

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
