"""``manage.py export_events``: the outbox's rows as CloudEvents, one per line, filtered, bounded, skipping poison."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from eventbus.contract import cloudevents
from eventbus.contract.envelope import Envelope
from eventbus.management.commands import export_events
from eventbus.models import OutboxEvent
from eventbus.outbox.publish import publish
from signups.events import UserEmailVerified, VerificationRequested
from telemetry.events import ReadingsReceived

# The rows stay in the test's transaction: nothing commits, so nothing is sent to a broker.
pytestmark = pytest.mark.django_db
READING = {"seq": 1, "at": "2026-12-07T09:00:00Z", "metric": "temperature", "value": 21.5}


def published() -> list[Envelope]:
    """Three events of three types, written through the outbox as a producer writes them."""
    with transaction.atomic():
        return [
            publish(VerificationRequested(user_id=1), aggregate="user:1"),
            publish(UserEmailVerified(user_id=1), aggregate="user:1", causation_id="cause-1"),
            publish(ReadingsReceived(device_id=7, readings=[READING]), aggregate="device:7"),
        ]


def export(*args: str) -> tuple[list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_events", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_every_event_comes_out_as_a_cloudevent_oldest_first() -> None:
    events = published()

    lines, err = export()

    assert [cloudevents.from_cloudevent(line) for line in lines] == events
    for line in lines:  # each line is a structured CloudEvent the SDK reads
        assert JSONFormat().read(None, json.dumps(line)).get_id() == line["id"]
    assert "exported 3 events" in err


def test_type_since_and_limit_choose_the_events() -> None:
    requested, verified, readings = published()
    OutboxEvent.objects.filter(pk=requested.id).update(occurred_at=datetime(2020, 1, 1, tzinfo=UTC))

    assert [line["id"] for line in export("--type", "user.email_verified")[0]] == [str(verified.id)]
    assert [line["id"] for line in export("--since", "2021-01-01")[0]] == [str(verified.id), str(readings.id)]
    assert [line["id"] for line in export("--limit", "2")[0]] == [str(requested.id), str(verified.id)]


def test_output_goes_to_a_file(tmp_path: Path) -> None:
    events = published()
    target = tmp_path / "events.jsonl"

    lines, _ = export("--output", str(target))

    assert lines == []
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["id"] for line in written] == [str(event.id) for event in events]


def test_rows_are_read_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_events, "BATCH", 2)
    events = published() + published()

    lines, _ = export()

    assert [line["id"] for line in lines] == [str(event.id) for event in events]


def test_a_row_that_does_not_decode_is_named_and_skipped_and_the_exit_code_says_so() -> None:
    requested, verified, readings = published()
    OutboxEvent.objects.filter(pk=verified.id).update(payload={"user_id": "one"})
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="1 events do not decode") as refused:
        call_command("export_events", stdout=out, stderr=err)

    assert refused.value.returncode == 1
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == [str(requested.id), str(readings.id)]
    assert f"skipped {verified.id} (user.email_verified v1): payload field user.email_verified.user_id is str" in (
        err.getvalue()
    )


@pytest.mark.parametrize(
    ("args", "reason"), [(["--since", "last week"], "not an ISO 8601 time"), (["--limit", "0"], "at least 1")]
)
def test_bad_arguments_are_refused(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        call_command("export_events", *args, stdout=io.StringIO(), stderr=io.StringIO())
