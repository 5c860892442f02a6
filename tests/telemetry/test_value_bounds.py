"""Readings that cannot overflow: the API's bound per value, and rollups that stay finite whatever is stored.

On PostgreSQL as well as SQLite (TEST_DATABASE_URL): the upsert's sums run in
the database, whose double precision ends where float64 does.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.models import Reading, Rollup
from telemetry.rollup import TOTAL_CEILING, fold
from telemetry.schemas import MAX_ABS_VALUE
from tests.telemetry.helpers import URL, body, device, reading
from tests.telemetry.test_rollup_and_retention import MINUTE, event, r

pytestmark = [pytest.mark.django_db, pytest.mark.database]


@pytest.fixture
def client(broker: None, redis_prefix: str) -> Client:
    return Client()


def post(client: Client, token: str, *readings: dict[str, Any]) -> Any:
    return client.post(
        URL,
        data=body({"readings": list(readings)}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, MAX_ABS_VALUE * 1.000001, -1e16, 10**400])
def test_a_value_beyond_the_bound_is_refused_with_the_bound_named(client: Client, value: float) -> None:
    _, token = device()

    response = post(client, token, reading(1, value=1.0), reading(2, value=value))

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["index"], error["field"]) == (1, "value")
    assert error["message"] == "must be between -1e15 and 1e15"
    assert not Reading.objects.exists()


def test_values_at_the_bound_are_accepted(client: Client) -> None:
    _, token = device()
    response = post(client, token, reading(1, value=MAX_ABS_VALUE), reading(2, value=-MAX_ABS_VALUE))
    assert response.status_code == 202
    assert sorted(Reading.objects.values_list("value", flat=True)) == [-MAX_ABS_VALUE, MAX_ABS_VALUE]


def test_the_bound_is_in_the_served_description(client: Client) -> None:
    value = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["ReadingIn"]["properties"]["value"]
    assert (value["minimum"], value["maximum"]) == (-MAX_ABS_VALUE, MAX_ABS_VALUE)
    assert "1e15" in value["description"]


def finite_rows() -> list[tuple[int, float, float, float]]:
    rows = [(row.count, row.total, row.minimum, row.maximum) for row in Rollup.objects.all()]
    assert all(math.isfinite(x) for row in rows for x in row[1:]), rows
    return rows


def test_a_minute_with_plus_and_minus_the_bound_rolls_up_finite() -> None:
    dev, _ = device()
    fold([event(dev.pk, r(1, 0, MAX_ABS_VALUE), r(2, 1, -MAX_ABS_VALUE))])
    # and again, in a later event, into the same stored bucket
    fold([event(dev.pk, r(3, 2, MAX_ABS_VALUE), r(4, 3, -MAX_ABS_VALUE), r(5, 4, MAX_ABS_VALUE))])
    assert finite_rows() == [(5, MAX_ABS_VALUE, -MAX_ABS_VALUE, MAX_ABS_VALUE)]


def test_readings_accepted_before_the_bound_are_folded_saturated_not_dead_lettered() -> None:
    # given: an event from before the API's bound, with the issue's +max and -max in one minute
    dev, _ = device()

    fold([event(dev.pk, r(1, 0, 1.7e308), r(2, 1, -1.7e308), r(3, 2, 1.0))])

    # then: folded (no PoisonMessage, no inf + -inf), each extreme as the bound
    assert finite_rows() == [(3, 1.0, -MAX_ABS_VALUE, MAX_ABS_VALUE)]


@pytest.mark.parametrize("stored", [1.7e308, -1.7e308])
def test_an_extreme_total_already_stored_cannot_overflow(stored: float) -> None:
    # given: a bucket whose total an older version let reach the end of float64
    dev, _ = device()
    Rollup.objects.create(
        device=dev,
        metric="t",
        minute=MINUTE,
        count=1,
        total=stored,
        minimum=stored,
        maximum=stored,
        updated_at=timezone.now(),
    )

    # when: more of the same sign are folded into it
    fold([event(dev.pk, r(1, 0, math.copysign(MAX_ABS_VALUE, stored)))])

    # then: the total was brought back to the ceiling first, and stays finite
    ((count, total, _, _),) = finite_rows()
    assert count == 2
    assert total == pytest.approx(math.copysign(TOTAL_CEILING, stored))


def test_the_dashboard_shows_no_inf(client: Client) -> None:
    dev, _ = device()
    now = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    fold([event(dev.pk, {"seq": 1, "at": now.isoformat(), "metric": "t", "value": 1.7e308})])
    page = client.get("/telemetry/").content.decode()
    assert 'id="metric-t"' in page
    assert "inf" not in page.lower()
