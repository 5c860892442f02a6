"""Poison messages of every kind become one dead letter each; a dead letter replayed after a fix has its effect once."""

from __future__ import annotations

import json
import pickle
import uuid
from typing import Any

import pytest
from django.test import Client
from kombu import Connection

from eventbus.models import DeadLetter, ProcessedEvent
from eventbus.observability import counters
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app
from tests.conftest import wait_for
from tests.faults.faultapp.probes import FRAGILE, attempts, broken_flag, effects
from tests.faults.harness import (
    ANALYTICS,
    manage,
    probe_wire,
    queue_length,
    send_probe,
    sign_up_many,
    unacked,
    wait_until_delivered,
)
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def envelope(**changes: Any) -> dict[str, Any]:
    """A well-formed user.signed_up envelope, changed as asked."""
    wire = {
        "id": str(uuid.uuid4()),
        "type": "user.signed_up",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "aggregate": "user:999999",
        "sequence": 1,
        "correlation_id": "poison",
        "causation_id": None,
        "payload": {"user_id": 999999},
    }
    wire.update(changes)
    return wire


def publish_raw(body: bytes, content_type: str, task: str, task_id: str, encoding: str = "utf-8") -> None:
    """Put a message on the analytics queue by hand, as a broken or hostile producer would."""
    with Connection(celery_app.conf.broker_url, transport_options=celery_app.conf.broker_transport_options) as conn:
        conn.Producer().publish(
            body,
            exchange=queues.ANALYTICS,
            routing_key=queues.ANALYTICS,
            content_type=content_type,
            content_encoding=encoding,
            headers={"task": task, "id": task_id, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
        )


def send_envelope(wire: dict[str, Any], task_id: str) -> None:
    """A proper Celery message for the analytics subscriber, carrying ``wire``."""
    celery_app.send_task(ANALYTICS, args=(wire,), queue=queues.ANALYTICS, routing_key=queues.ANALYTICS, task_id=task_id)


# task id -> (exception type contains, reason contains)
EXPECTED = {
    "poison-not-json": ("DecodeError", "could not be decoded"),
    "poison-pickle": ("ContentDisallowed", "'application/x-python-serialize' is not accepted"),
    "poison-unknown-task": ("NotRegistered", "unregistered task 'analytics.no_such_task'"),
    "poison-broken-envelope": ("PoisonMessage", "envelope lacks fields: occurred_at, aggregate"),
    "poison-unknown-type": ("PoisonMessage", "unknown event type 'faults.no_such_event'"),
    "poison-old-version": ("PoisonMessage", "unsupported schema version 99 of user.signed_up"),
}


def test_poison_messages_are_dead_lettered_once_and_a_replay_after_the_fix_has_its_effect_once(
    workers: Workers, sink: ProviderSink
) -> None:
    """Six kinds of poison reach the analytics queue: a body that is not JSON, a pickled body,
    an unknown task name, an envelope missing fields, an unknown event type and an
    unsupported schema version. Each becomes exactly one ``poison`` dead letter naming the
    problem; none is redelivered or loops; the workers go on serving sign-ups.

    Then a subscriber with a bug dead-letters an event as ``permanent``; the bug is fixed (a
    Redis flag cleared) and an operator replays the dead letter with ``manage.py deadletters
    replay``: the effect happens once. Replaying it again changes nothing (the ledger skips it).
    """
    workers.wait_ready(
        workers.spawn("poison-subs", queues.ANALYTICS, queues.DEAD_LETTER),
        workers.spawn("poison-mail", queues.NOTIFICATIONS, concurrency=1),
    )
    wire = envelope()

    # when: poison of every kind arrives
    publish_raw(b"{this is not json", "application/json", ANALYTICS, "poison-not-json")
    publish_raw(pickle.dumps([[wire], {}, {}]), "application/x-python-serialize", ANALYTICS, "poison-pickle", "binary")
    framed = json.dumps([[wire], {}, {}]).encode()
    publish_raw(framed, "application/json", "analytics.no_such_task", "poison-unknown-task")
    broken = {k: v for k, v in envelope().items() if k not in ("occurred_at", "aggregate")}
    send_envelope(broken, "poison-broken-envelope")
    send_envelope(envelope(type="faults.no_such_event"), "poison-unknown-type")
    send_envelope(envelope(version=99), "poison-old-version")

    # then: one poison dead letter each, naming its problem
    wait_for(lambda: DeadLetter.objects.filter(kind="poison").count() >= len(EXPECTED), timeout=30, what="poison")
    rows = {row.task_id: row for row in DeadLetter.objects.filter(kind="poison")}
    assert sorted(rows) == sorted(EXPECTED)
    for task_id, (exception_type, reason) in EXPECTED.items():
        row = rows[task_id]
        print(f"{task_id}: {row.reason[:150]}")
        assert exception_type in row.exception_type, (task_id, row.exception_type)
        assert reason in row.exception_message, (task_id, row.exception_message)
        assert row.queue == queues.ANALYTICS
    assert rows["poison-pickle"].body is None and "\\x80" in rows["poison-pickle"].raw_body

    # and: the workers keep serving
    assert [r.status_code for r in sign_up_many(1, Client())] == [302]
    wait_until_delivered(sink, timeout=30)

    # and: nothing loops: every message was settled, none waits to come back (a retry waiting
    # for its countdown is held unacknowledged)
    wait_for(
        lambda: queue_length(queues.ANALYTICS) == queue_length(queues.DEAD_LETTER) == unacked() == 0,
        timeout=15,
        what="queues empty, nothing unacknowledged",
    )
    assert DeadLetter.objects.filter(kind="poison").count() == len(EXPECTED)

    # given: a subscriber with a bug, which dead-letters its event
    redis_client().set(broken_flag(), "1")
    probe = probe_wire("fragile")
    send_probe(FRAGILE, probe, queues.ANALYTICS)
    wait_for(lambda: DeadLetter.objects.filter(subscriber=FRAGILE).exists(), timeout=30, what="the fragile letter")
    letter = DeadLetter.objects.get(subscriber=FRAGILE)
    assert (letter.kind, letter.attempts) == ("permanent", 1)
    assert effects(FRAGILE, probe["id"]) == 0

    # when: the bug is fixed and an operator replays the dead letter
    redis_client().delete(broken_flag())
    first = manage(workers, "deadletters", "replay", str(letter.id))
    assert first.returncode == 0, first.stderr
    assert "not processed yet, the handler will run" in first.stdout

    # then: the effect happens, once
    wait_for(lambda: effects(FRAGILE, probe["id"]) == 1, timeout=30, what="the replayed effect")
    assert ProcessedEvent.objects.filter(event_id=probe["id"], subscriber=FRAGILE).count() == 1

    # and: replaying again changes nothing
    second = manage(workers, "deadletters", "replay", str(letter.id))
    assert second.returncode == 0, second.stderr
    assert "already processed per the ledger, so a replay is a no-op" in second.stdout
    wait_for(lambda: counters.read(counters.DUPLICATES).get(FRAGILE) == 1, timeout=30, what="the replay skipped")
    assert effects(FRAGILE, probe["id"]) == 1
    assert len(attempts(FRAGILE, probe["id"])) == 2  # the failure and the replay; the second replay never ran it
    assert letter.replays.count() == 2

    check_invariant(
        sink,
        "poison and replay",
        committed=1,
        expected_dead_letters=len(EXPECTED) + 1,
        dead_letters=lambda d: d.kind == "poison" or (d.subscriber, d.kind) == (FRAGILE, "permanent"),
    )
