"""At most TELEMETRY_MAX_METRICS_PER_DEVICE metric names per device (telemetry/metric_names.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from telemetry.models import DeviceMetric, Reading
from tests.telemetry.helpers import URL, body, device, reading

pytestmark = pytest.mark.database

LIMIT = 3


@pytest.fixture
def client(broker: None, redis_prefix: str, settings: Any) -> Client:
    settings.TELEMETRY_MAX_METRICS_PER_DEVICE = LIMIT
    return Client()


def post(client: Client, token: str, *readings: dict[str, Any]) -> Any:
    return client.post(
        URL,
        data=body({"readings": list(readings)}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.django_db
def test_names_up_to_the_limit_pass_and_one_more_is_409_naming_the_limit(client: Client) -> None:
    # given: a device that has used the limit's worth of names
    dev, token = device()
    assert post(client, token, *(reading(n, metric=f"m{n}") for n in range(LIMIT))).status_code == 202

    # when: a batch of known names and two new ones
    response = post(client, token, reading(10, metric="m0"), reading(11, metric="new1"), reading(12, metric="new2"))

    # then: refused whole, the limit and each new name's first reading named
    assert response.status_code == 409
    answer = response.json()
    assert f"at most {LIMIT} metric names (TELEMETRY_MAX_METRICS_PER_DEVICE)" in answer["detail"]
    assert [(e["index"], e["field"]) for e in answer["errors"]] == [(1, "metric"), (2, "metric")]
    assert all(f"limit of {LIMIT}" in e["message"] for e in answer["errors"])
    assert Reading.objects.filter(device=dev).count() == LIMIT
    assert DeviceMetric.objects.filter(device=dev).count() == LIMIT

    # and: the names it has keep working, and another device has its own names
    assert post(client, token, reading(20, metric="m1"), reading(21, metric="m2")).status_code == 202
    other = device("sensor-2")[1]
    assert post(client, other, reading(1, metric="new1")).status_code == 202


@pytest.mark.django_db
def test_a_batch_of_known_names_costs_one_lookup_and_no_count(client: Client) -> None:
    _, token = device()
    post(client, token, reading(1, metric="a"), reading(2, metric="b"))

    with CaptureQueriesContext(connection) as queries:
        assert post(client, token, reading(3, metric="a"), reading(4, metric="b")).status_code == 202

    touching_names = [q["sql"] for q in queries if "telemetry_devicemetric" in q["sql"]]
    assert len(touching_names) == 1, touching_names
    assert not any("COUNT(" in q["sql"].upper() for q in queries), [q["sql"] for q in queries]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_new_names_never_overshoot(broker: None, redis_prefix: str, settings: Any) -> None:
    """Eight requests at once, each with two new names, against a limit of 4: two pass, six get 409,
    exactly four names and their four readings kept (none over the limit, none half accepted)."""
    settings.TELEMETRY_MAX_METRICS_PER_DEVICE = 4
    settings.TELEMETRY_DEVICE_RATE = "1000/s"
    dev, token = device()
    statuses: list[int] = []
    start = threading.Barrier(8)

    def send(n: int) -> None:
        try:
            start.wait()
            response = post(Client(), token, reading(2 * n, metric=f"a{n}"), reading(2 * n + 1, metric=f"b{n}"))
            statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [202, 202] + [409] * 6
    assert DeviceMetric.objects.filter(device=dev).count() == 4
    assert Reading.objects.filter(device=dev).count() == 4
