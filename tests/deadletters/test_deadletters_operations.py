"""Operations on dead letters: filters, replay (sent, recorded, dry-run, not replayable), purge, retention."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings

from eventbus.contract.envelope import Envelope
from eventbus.deadletters import Kind, operations
from eventbus.delivery import ledger
from eventbus.models import DeadLetter, DeadLetterReplay
from eventbus.tasks import purge_dead_letters
from project import queues
from tests.deadletters.test_deadletters import ANALYTICS, dead_letter, envelope, queued

pytestmark = pytest.mark.django_db


# --- filters -------------------------------------------------------------------


def test_filters_combine_and_ages_count_from_the_last_failure() -> None:
    old = dead_letter(age=timedelta(days=5))
    recent = dead_letter(age=timedelta(hours=1))
    poison = dead_letter(kind=Kind.POISON, subscriber="", event_type="", body=None, raw_body="x", task_id="p")
    email = dead_letter(subscriber="notifications.send_welcome_email", event_type="user.email_verified")

    def ids(**filters: object) -> set[uuid.UUID]:
        return set(operations.filter_dead_letters(**filters).values_list("pk", flat=True))  # type: ignore[arg-type]

    assert ids() == {old.pk, recent.pk, poison.pk, email.pk}
    assert ids(subscriber=ANALYTICS) == {old.pk, recent.pk}
    assert ids(event_type="user.email_verified") == {email.pk}
    assert ids(kind="poison") == {poison.pk}
    assert ids(older_than=timedelta(days=3)) == {old.pk}
    assert ids(newer_than=timedelta(hours=2), subscriber=ANALYTICS) == {recent.pk}


# --- replay --------------------------------------------------------------------


def test_replay_sends_the_envelope_to_the_subscribers_queue_as_a_fresh_task_and_records_it(broker: None) -> None:
    row = dead_letter()

    report = operations.replay(DeadLetter.objects.all(), by="alice")

    (item,) = report.items
    assert item.sent and item.subscriber == ANALYTICS and not item.already_processed
    (message,) = queued(queues.ANALYTICS)
    assert message["headers"]["task"] == ANALYTICS
    assert message["headers"]["id"] == item.task_id != row.task_id
    assert message["headers"]["retries"] == 0
    assert message["body"][0] == [row.body]
    replay = DeadLetterReplay.objects.get()
    assert (replay.dead_letter_id, replay.replayed_by, replay.task_id) == (row.pk, "alice", item.task_id)
    assert replay.subscriber == ANALYTICS and not replay.skipped_by_ledger
    assert report.summary().startswith("replayed 1 of 1")


def test_dry_run_sends_nothing_and_says_which_the_ledger_would_skip(broker: None) -> None:
    done = dead_letter()
    pending = dead_letter()
    ledger.claim(Envelope.from_dict(done.body), ANALYTICS)

    report = operations.replay(DeadLetter.objects.all(), by="alice", dry_run=True)

    by_id = {i.dead_letter_id: i for i in report.items}
    assert by_id[done.pk].already_processed and not by_id[pending.pk].already_processed
    assert not any(i.sent for i in report.items)
    assert "a replay is a no-op" in by_id[done.pk].describe(dry_run=True)
    assert "the handler will run" in by_id[pending.pk].describe(dry_run=True)
    assert queued(queues.ANALYTICS) == [] and not DeadLetterReplay.objects.exists()
    assert report.summary() == (
        "dry run: 2 of 2 dead letters would be replayed, 1 of them already processed (no-op), 0 not replayable"
    )


def test_a_replay_of_an_event_already_processed_is_recorded_as_skipped_by_the_ledger(broker: None) -> None:
    row = dead_letter()
    ledger.claim(Envelope.from_dict(row.body), ANALYTICS)
    operations.replay([row], by="alice")
    assert DeadLetterReplay.objects.get().skipped_by_ledger


def test_what_cannot_be_replayed_is_reported_with_the_reason(broker: None) -> None:
    raw = dead_letter(kind=Kind.POISON, body=None, raw_body="not json", task_id="a")
    nobody = dead_letter(kind=Kind.POISON, subscriber="", task_id="b")
    broken = dead_letter(kind=Kind.POISON, body=envelope(version=99), task_id="c")
    renamed = dead_letter(subscriber="analytics.gone", task_id="d")

    report = operations.replay([raw, nobody, broken, renamed], by="alice")

    reasons = {i.dead_letter_id: i.reason for i in report.items if not i.replayable}
    assert "not JSON" in reasons[raw.pk]
    assert "no subscriber recorded" in reasons[nobody.pk]
    assert "still invalid: unsupported schema version 99" in reasons[broken.pk]
    assert "no subscriber named 'analytics.gone'" in reasons[renamed.pk]
    assert queued(queues.ANALYTICS) == [] and not DeadLetterReplay.objects.exists()


def test_a_named_subscriber_overrides_the_recorded_one(broker: None) -> None:
    orphan = dead_letter(kind=Kind.POISON, subscriber="", task_name="nope.unknown")
    report = operations.replay([orphan], by="alice", subscriber=ANALYTICS)
    assert report.items[0].sent
    assert queued(queues.ANALYTICS)[0]["headers"]["task"] == ANALYTICS


def test_rate_paces_the_sends(broker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(operations, "sleep", pauses.append)
    rows = [dead_letter() for _ in range(3)]
    operations.replay(rows, by="alice", rate=4)
    assert pauses == [0.25, 0.25]  # between sends, not before the first
    assert len(queued(queues.ANALYTICS)) == 3


def test_a_broker_failure_stops_the_replay_and_is_reported() -> None:
    from tests.brokers import using_broker

    rows = [dead_letter() for _ in range(2)]
    with using_broker("redis://127.0.0.1:1/0"):
        report = operations.replay(rows, by="alice")
    assert len(report.unsent) == 2 and not report.sent
    assert "not attempted after a broker failure" in report.items[1].reason
    assert "2 not sent (broker failure)" in report.summary()
    assert not DeadLetterReplay.objects.exists()


# --- purge and retention -------------------------------------------------------


def test_purge_deletes_the_queryset_and_its_replays(broker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "PURGE_BATCH", 2)  # several batches
    rows = [dead_letter() for _ in range(5)]
    keep = dead_letter(kind=Kind.PERMANENT)
    operations.replay(rows[:1], by="alice")

    assert operations.purge(DeadLetter.objects.filter(kind=Kind.RETRIES_EXHAUSTED)) == 5
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [keep.pk]
    assert not DeadLetterReplay.objects.exists()


@override_settings(EVENTBUS_DEADLETTER_RETENTION_DAYS=30)
def test_retention_purges_what_last_failed_before_the_retention_period() -> None:
    expired = dead_letter(age=timedelta(days=31))
    kept = dead_letter(age=timedelta(days=29))
    assert purge_dead_letters.run() == 1
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {kept.pk}
    assert not DeadLetter.objects.filter(pk=expired.pk).exists()
    with pytest.raises(ValueError, match="at least one day"):
        operations.purge_older_than(0)


def test_a_cut_body_is_not_replayed_and_says_why(broker: None, settings: Any) -> None:
    # given: a poison letter whose body was too big to keep whole
    settings.EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES = 1024
    cut = dead_letter(kind=Kind.POISON, body=envelope(payload={"user_id": 7, "pad": "z" * 4000}))
    assert cut.body_truncated

    # when: replayed, even to a named subscriber
    report = operations.replay([cut], by="ops", subscriber=ANALYTICS)

    # then: nothing is sent; the reason names the cut, its length and its hash
    (item,) = report.not_replayable
    assert not report.sent and queued(queues.ANALYTICS) == []
    assert "cut when stored" in item.reason and str(cut.body_length) in item.reason and cut.body_sha256 in item.reason
