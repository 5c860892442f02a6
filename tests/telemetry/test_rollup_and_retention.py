"""Folding (without a worker: the function the subscriber calls) and the retention purge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from telemetry.events import ReadingsReceived
from telemetry.models import Reading, Rollup
from telemetry.retention import purge_expired
from telemetry.rollup import fold
from tests.telemetry.helpers import device

pytestmark = [pytest.mark.django_db]

MINUTE = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def event(device_id: int, *readings: dict[str, Any]) -> Envelope:
    return Envelope(
        id=uuid.uuid4(),
        type="telemetry.readings_received",
        version=1,
        occurred_at=timezone.now(),
        aggregate=f"device:{device_id}",
        sequence=1,
        correlation_id="c",
        causation_id=None,
        payload=ReadingsReceived(device_id=device_id, readings=list(readings)),
    )


def r(seq: int, seconds: int, value: float, metric: str = "t") -> dict[str, Any]:
    return {"seq": seq, "at": (MINUTE + timedelta(seconds=seconds)).isoformat(), "metric": metric, "value": value}


def test_fold_adds_to_buckets_across_calls() -> None:
    dev, _ = device()
    assert fold([event(dev.pk, r(1, 5, 2.0), r(2, 59, 4.0), r(3, 60, 10.0))]) == 2
    # a late reading for the first minute, in a later event
    fold([event(dev.pk, r(4, 30, -1.0))])
    rows = {row.minute: (row.count, row.total, row.minimum, row.maximum) for row in Rollup.objects.all()}
    assert rows == {MINUTE: (3, 5.0, -1.0, 4.0), MINUTE + timedelta(minutes=1): (1, 10.0, 10.0, 10.0)}


def test_the_payload_round_trips_through_json() -> None:
    dev, _ = device()
    wire = event(dev.pk, r(1, 0, 1.5)).to_dict()
    import json

    assert Envelope.from_dict(json.loads(json.dumps(wire))).payload.readings == [r(1, 0, 1.5)]


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": 1, "at": "not a time", "metric": "t", "value": 1},
        {"seq": 1, "at": "2026-01-31T12:00:00", "metric": "t", "value": 1},
        {"seq": 1, "at": "2026-01-31T12:00:00Z", "metric": "t", "value": "1"},
        {"seq": 1, "at": "2026-01-31T12:00:00Z", "value": 1},
        "just a string",
    ],
)
def test_a_reading_that_cannot_be_folded_is_poison_and_nothing_is_written(bad: Any) -> None:
    dev, _ = device()
    with pytest.raises(PoisonMessage, match="cannot be folded"):
        fold([event(dev.pk, r(1, 0, 1.0), bad)])
    assert not Rollup.objects.exists()


def test_purge_deletes_only_expired_readings_in_bounded_batches() -> None:
    dev, _ = device()
    now = timezone.now()
    old = [
        Reading(device=dev, seq=n, at=now, metric="t", value=1, received_at=now - timedelta(days=8)) for n in range(25)
    ]
    new = [Reading(device=dev, seq=100 + n, at=now, metric="t", value=1, received_at=now) for n in range(5)]
    Reading.objects.bulk_create(old + new)

    assert purge_expired(7, batch=10, max_batches=2) == 20, "two batches of ten, then the run stops"
    assert purge_expired(7, batch=10, max_batches=2) == 5
    assert purge_expired(7) == 0
    assert sorted(Reading.objects.values_list("seq", flat=True)) == list(range(100, 105))


def test_beat_schedules_the_purge_on_the_telemetry_queue(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["telemetry.purge_readings"]
    assert entry["task"] == "telemetry.purge_readings" and entry["options"]["queue"] == "telemetry"


def test_the_dashboard_shows_each_metric_of_the_last_hour(client: Any, broker: None) -> None:
    # given: two minutes of one metric and one of another, just now
    dev, _ = device()
    now = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    at = [(now + timedelta(seconds=s)).isoformat() for s in (0, 10, 70)]
    fold(
        [
            event(
                dev.pk,
                {"seq": 1, "at": at[0], "metric": "temp", "value": 1.0},
                {"seq": 2, "at": at[1], "metric": "temp", "value": 3.0},
                {"seq": 3, "at": at[2], "metric": "temp", "value": 5.0},
                {"seq": 4, "at": at[0], "metric": "hum", "value": 40.0},
            )
        ]
    )
    Reading.objects.create(device=dev, seq=1, at=now, metric="temp", value=1.0, received_at=timezone.now())

    # when
    page = client.get("/telemetry/").content.decode()

    # then: a chart and a table per metric, the rate over the last minute
    assert 'id="metric-temp"' in page and 'id="metric-hum"' in page
    assert page.count("<svg") == 2
    assert "<td>2</td><td>1.000</td><td>2.000</td><td>3.000</td>" in page
    assert 'id="ingestion-rate">0.0 readings/s' in page or 'id="ingestion-rate">0.1 readings/s' in page


def test_the_dashboard_without_readings_says_how_to_get_some(client: Any, broker: None) -> None:
    assert "add_device" in client.get("/telemetry/").content.decode()


def test_minutes_are_stored_as_the_orm_stores_them() -> None:
    # given: a bucket folded through raw SQL, and the same instant in another offset
    dev, _ = device()
    fold([event(dev.pk, r(1, 5, 1.0))])
    other_offset = MINUTE.astimezone(timezone.get_fixed_timezone(120))

    # then: the ORM finds it by equality, and a second fold hits the same row
    assert Rollup.objects.filter(minute=other_offset).count() == 1
    fold([event(dev.pk, {**r(2, 10, 2.0), "at": (other_offset + timedelta(seconds=10)).isoformat()})])
    assert list(Rollup.objects.values_list("count", flat=True)) == [2]
