"""The readings API through Django's test client: every field validated, the limits, the tokens.

The door's Redis (device rate) and broker (queue depth) are this run's real
ones; no worker runs, so accepted batches wait in the telemetry queue.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

import pytest
from django.test import Client

from eventbus.models import OutboxEvent
from eventbus.observability import counters
from telemetry import door, tokens
from telemetry.models import Reading
from tests.telemetry.helpers import URL, batch, body, device, reading

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def client(broker: None, redis_prefix: str) -> Client:
    return Client()


def post(client: Client, token: str, payload: Any, **extra: Any) -> Any:
    return client.post(
        URL, data=body(payload), content_type="application/json", headers={"Authorization": f"Bearer {token}"}, **extra
    )


def errors_of(response: Any) -> list[tuple[int | None, str]]:
    return [(e["index"], e["field"]) for e in response.json()["errors"]]


def test_a_valid_batch_is_accepted_and_published_once(client: Client) -> None:
    # given
    _, token = device()

    # when
    response = post(client, token, batch(1, 3))

    # then
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert Reading.objects.count() == 3
    event = OutboxEvent.objects.get(type="telemetry.readings_received")
    assert [r["seq"] for r in event.payload["readings"]] == [1, 2, 3]
    assert token not in str(event.payload), "the payload carries no token"


def test_a_resent_batch_counts_duplicates_and_publishes_only_the_new(client: Client) -> None:
    _, token = device()
    assert post(client, token, batch(1, 3)).status_code == 202

    again = post(client, token, batch(1, 3))
    overlapping = post(client, token, batch(3, 3))

    assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicates": 3}
    assert overlapping.json() == {"accepted": 2, "duplicates": 1}
    assert Reading.objects.count() == 5
    events = OutboxEvent.objects.filter(type="telemetry.readings_received").order_by("sequence")
    assert [[r["seq"] for r in e.payload["readings"]] for e in events] == [[1, 2, 3], [4, 5]]


def test_seqs_are_per_device(client: Client) -> None:
    _, first = device("a")
    _, second = device("b")
    assert post(client, first, batch(1, 2)).json()["accepted"] == 2
    assert post(client, second, batch(1, 2)).json()["accepted"] == 2


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"seq": -1}, "seq", "greater than or equal to 0"),
        ({"seq": "7"}, "seq", "integer"),
        ({"seq": True}, "seq", "integer"),
        ({"seq": 1.5}, "seq", "integer"),
        ({"seq": 2**63}, "seq", "less than or equal"),
        ({"at": "yesterday"}, "at", "datetime"),
        ({"at": "2026-01-31T12:00:00"}, "at", "UTC offset"),
        ({"at": 1700000000}, "at", "ISO 8601"),
        ({"at": "2999-01-01T00:00:00Z"}, "at", "ahead of the server's clock"),
        ({"at": "2001-01-01T00:00:00Z"}, "at", "older than the retention period"),
        ({"metric": ""}, "metric", "pattern"),
        ({"metric": "x" * 65}, "metric", "pattern"),
        ({"metric": "temp in °C"}, "metric", "pattern"),
        ({"metric": 3}, "metric", "string"),
        ({"value": "20"}, "value", "number"),
        ({"value": True}, "value", "number"),
        ({"value": None}, "value", "number"),
        ({"unit": "C"}, "unit", "Extra inputs"),
    ],
)
def test_a_malformed_reading_names_what_to_change_and_nothing_is_accepted(
    client: Client, change: dict[str, Any], field: str, says: str
) -> None:
    _, token = device()
    bad = {**reading(2), **change}
    response = post(client, token, {"readings": [reading(1), bad, reading(3)]})

    assert response.status_code == 400, response.content
    (error,) = response.json()["errors"]
    assert (error["index"], error["field"]) == (1, field)
    assert says in error["message"], error["message"]
    assert not Reading.objects.exists() and not OutboxEvent.objects.exists()


def test_a_missing_field_and_every_bad_item_are_listed(client: Client) -> None:
    _, token = device()
    no_value = {k: v for k, v in reading(1).items() if k != "value"}
    response = post(client, token, {"readings": [no_value, reading(2), {**reading(3), "seq": "x", "metric": ""}]})
    assert response.status_code == 400
    assert sorted(errors_of(response)) == [(0, "value"), (2, "metric"), (2, "seq")]


def test_nan_and_infinity_are_refused(client: Client) -> None:
    _, token = device()
    raw = b'{"readings": [{"seq": 1, "at": "%s", "metric": "t", "value": NaN}]}' % reading(1)["at"].encode()
    response = client.post(URL, data=raw, content_type="application/json", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert errors_of(response) == [(0, "value")]


def test_a_seq_twice_in_one_batch_is_refused(client: Client) -> None:
    _, token = device()
    response = post(client, token, {"readings": [reading(1), reading(2), reading(1)]})
    assert response.status_code == 400
    assert errors_of(response) == [(2, "seq")]
    assert "also the seq of reading 0" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"readings": []}, "readings"), ({}, "readings"), ([reading(1)], "body"), ({"readings": "x"}, "readings")],
)
def test_a_malformed_body_is_refused(client: Client, payload: Any, field: str) -> None:
    _, token = device()
    response = post(client, token, payload)
    assert response.status_code == 400, response.content
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_broken_json_is_refused(client: Client) -> None:
    _, token = device()
    response = client.post(
        URL, data=b'{"readings": [', content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert "not valid JSON" in response.json()["errors"][0]["message"]


def test_500_readings_pass_and_501_do_not(client: Client) -> None:
    _, token = device()
    assert post(client, token, batch(1, 500)).json() == {"accepted": 500, "duplicates": 0}
    response = post(client, token, batch(1000, 501))
    assert response.status_code == 400
    assert errors_of(response) == [(None, "readings")]


def test_a_body_over_one_mebibyte_is_413(client: Client) -> None:
    _, token = device()
    payload = {"readings": [{**reading(1), "metric": "m", "pad": "x" * (1024 * 1024)}]}
    response = post(client, token, payload)
    assert response.status_code == 413
    assert "1048576 bytes" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_an_unknown_content_type_is_415(client: Client, content_type: str) -> None:
    _, token = device()
    response = client.post(
        URL, data=body(batch(1, 1)), content_type=content_type, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 415
    assert not Reading.objects.exists()


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", "Token {token}"])
def test_a_missing_or_bad_token_is_401_with_www_authenticate(client: Client, authorization: str | None) -> None:
    _, token = device()
    extra = {} if authorization is None else {"Authorization": authorization.format(token=token)}
    response = client.post(URL, data=body(batch(1, 1)), content_type="application/json", headers=extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Reading.objects.exists()


def test_an_inactive_device_is_401(client: Client) -> None:
    dev, token = device()
    dev.active = False
    dev.save()
    assert post(client, token, batch(1, 1)).status_code == 401


def test_tokens_are_random_stored_hashed_and_rotatable(client: Client) -> None:
    dev, token = device()
    assert len(token) > 40 and token != device("other")[1]
    dev.refresh_from_db()
    assert dev.token_hash == tokens.hash_token(token) and token not in dev.token_hash
    new = tokens.rotate(dev)
    assert post(client, token, batch(1, 1)).status_code == 401
    assert post(client, new, batch(1, 1)).status_code == 202


def test_a_device_above_its_rate_gets_429_retry_after_and_is_counted(client: Client, settings: Any) -> None:
    # given: two requests per second allowed
    settings.TELEMETRY_DEVICE_RATE = "2/s"
    _, token = device("fast")

    # when: five in a row
    statuses = [post(client, token, batch(n * 10, 1)).status_code for n in range(5)]

    # then
    assert statuses[:2] == [202, 202] and statuses[2:] == [429, 429, 429]
    refused = post(client, token, batch(100, 1))
    assert int(refused["Retry-After"]) >= 1 and refused.json()["retry_after"] == int(refused["Retry-After"])
    assert door.throttled_counts()[("fast", door.RATE)] == 4
    assert counters.read(door.THROTTLED) == {"fast|rate": 4}
    metrics = client.get("/metrics").content.decode()
    assert 'telemetry_throttled_total{device="fast",reason="rate"} 4.0' in metrics


def test_the_add_device_command_prints_a_working_token(client: Client) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("add_device", "cmd-device", stdout=out)
    token = out.getvalue().splitlines()[-1]
    assert post(client, token, batch(1, 1)).status_code == 202


def test_times_are_stored_as_the_instant_they_name_whatever_the_offset(client: Client) -> None:
    from datetime import UTC, datetime, timedelta

    _, token = device()
    taken = datetime.now(UTC).replace(microsecond=123000) - timedelta(minutes=3)
    in_paris = taken.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert post(client, token, {"readings": [{**reading(1), "at": in_paris}]}).status_code == 202
    stored = Reading.objects.get()
    assert stored.at == taken and stored.received_at > taken


def test_a_logged_in_session_is_no_credential_for_the_api(client: Client, django_user_model: Any) -> None:
    # The API is exempt from CSRF because a cookie never authenticates it.
    staff = django_user_model.objects.create_superuser("admin", "admin@example.com", "x")
    client.force_login(staff)
    response = client.post(URL, data=body(batch(1, 1)), content_type="application/json")
    assert response.status_code == 401
    assert not Reading.objects.exists()
