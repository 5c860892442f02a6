"""Dispatched marks written off the request (eventbus/fastpath/marks.py), against the real Redis and database.

In this process the marks are written in the request (tests/conftest.py sets
EVENTBUS_MARK_BATCH_SECONDS to 0); these tests turn the marker on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.db import transaction

from eventbus.fastpath import marks
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.outbox import fanout
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from project import queues
from signups.events import UserSignedUp
from tests.conftest import REPO, queue_length, worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.usefixtures("broker")]

Status = OutboxEvent.Status
SUBSCRIBER_QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS)


def publish_committed(user_id: int) -> str:
    with transaction.atomic():
        return str(publish(UserSignedUp(user_id=user_id, channel="web"), aggregate=f"user:{user_id}").id)


def test_the_request_sends_and_leaves_the_mark_to_the_marker_which_writes_many_rows_at_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a marker of this test's own, whose thread gathers for a minute
    marker = marks.Marker(fanout.mark_dispatched)
    monkeypatch.setattr(fanout, "MARKER", marker)
    settings.EVENTBUS_MARK_BATCH_SECONDS = 60

    # when: three events commit
    ids = [publish_committed(n) for n in (1, 2, 3)]

    # then: their messages are on the queues, and their rows wait for the marker
    assert [queue_length(q) for q in SUBSCRIBER_QUEUES] == [3, 3]
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {Status.PENDING}
    assert marker.pending() == 3

    # when: the marker writes
    assert marker.flush() == 3

    # then: one transaction marked them all, with what the request would have written
    rows = list(OutboxEvent.objects.filter(id__in=ids))
    assert {row.status for row in rows} == {Status.DISPATCHED}
    assert len({row.dispatched_at for row in rows}) == 1
    assert all(sorted(row.sent_to) == ["analytics.record_event", "notifications.send_welcome_email"] for row in rows)
    assert all(row.dispatch_attempts == 1 and row.last_sent_at == row.dispatched_at for row in rows)
    assert marker.pending() == 0 and marker.flush() == 0


def test_the_marker_thread_writes_the_mark_soon_after_the_commit(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "MARKER", marks.Marker(fanout.mark_dispatched))
    settings.EVENTBUS_MARK_BATCH_SECONDS = 0.05

    event_id = publish_committed(4)

    deadline = time.monotonic() + 10
    while OutboxEvent.objects.get(id=event_id).status != Status.DISPATCHED:
        assert time.monotonic() < deadline, "the marker's thread did not mark the row within 10 s"
        time.sleep(0.02)
    assert fanout.MARKER.pending() == 0


def test_a_flush_at_exit_waits_for_the_write_the_thread_has_begun(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the marker's thread in the middle of writing a mark
    settings.EVENTBUS_MARK_BATCH_SECONDS = 0.01
    writing, finish, written = threading.Event(), threading.Event(), threading.Event()

    def slow_mark(outcomes: Any) -> None:
        writing.set()
        finish.wait(10)
        fanout.mark_dispatched(outcomes)
        written.set()

    marker = marks.Marker(slow_mark)
    monkeypatch.setattr(fanout, "MARKER", marker)
    event_id = publish_committed(8)
    assert writing.wait(10), "the marker's thread did not start writing"

    # when: the process's exit flush runs meanwhile
    threading.Timer(0.2, finish.set).start()
    marker.flush()

    # then: it returned only once the thread's write was done
    assert written.is_set()
    assert OutboxEvent.objects.get(id=event_id).status == Status.DISPATCHED


def test_a_shed_outcome_is_settled_in_the_request(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: the analytics queue (a sheddable subscriber's) at its high-water mark of one message
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 0
    settings.EVENTBUS_HIGH_WATER_MARKS = f"{queues.ANALYTICS}=1"
    publish_committed(5)  # marked in the request: the setting is 0 here
    assert queue_length(queues.ANALYTICS) == 1
    marker = marks.Marker(fanout.mark_dispatched)
    monkeypatch.setattr(fanout, "MARKER", marker)
    settings.EVENTBUS_MARK_BATCH_SECONDS = 60

    # when
    event_id = publish_committed(6)

    # then: nothing waits for the marker; the row and the ledger say at once what happened
    assert marker.pending() == 0
    row = OutboxEvent.objects.get(id=event_id)
    assert row.status == Status.DISPATCHED
    assert row.sent_to == ["notifications.send_welcome_email"]
    assert ProcessedEvent.objects.filter(event_id=event_id, outcome=ProcessedEvent.Outcome.SHED).count() == 1


PUBLISHER = """
import os, signal, sys
import django
django.setup()
from django.db import transaction
from eventbus.outbox import fanout
from eventbus.outbox.publish import publish
from signups.events import UserSignedUp
with transaction.atomic():
    event = publish(UserSignedUp(user_id=7, channel="web"), aggregate="user:7")
print(event.id, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_a_process_writes_its_marks_when_it_exits_and_a_killed_one_leaves_them_to_the_relay(ending: str) -> None:
    # given: a process whose marker would gather for a minute
    env = worker_env(
        DJANGO_SETTINGS_MODULE="project.settings", EVENTBUS_MARK_BATCH_SECONDS="60", EVENTBUS_RELAY_GRACE="600"
    )
    result = subprocess.run(
        [sys.executable, "-c", PUBLISHER, ending], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == (-signal.SIGKILL if ending == "kill" else 0), result.stderr
    row = OutboxEvent.objects.get(id=result.stdout.strip())
    assert [queue_length(q) for q in SUBSCRIBER_QUEUES] == [1, 1]

    if ending == "exit":
        # then: it wrote the mark on its way out
        assert row.status == Status.DISPATCHED and row.dispatch_attempts == 1
        assert relay(grace=0).dispatched == 0
        return

    # then: killed with the mark unwritten, the row is pending: the relay sends it again, nothing is lost
    assert row.status == Status.PENDING
    assert relay(grace=0).dispatched == 1
    row.refresh_from_db()
    assert row.status == Status.DISPATCHED
    assert [queue_length(q) for q in SUBSCRIBER_QUEUES] == [2, 2]


def test_a_grace_too_short_for_the_batch_stops_the_process_at_start() -> None:
    env = {**os.environ, "EVENTBUS_MARK_BATCH_SECONDS": "1", "EVENTBUS_RELAY_GRACE": "2"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "EVENTBUS_RELAY_GRACE (2s) must be at least 5 times EVENTBUS_MARK_BATCH_SECONDS (1s)" in result.stderr
