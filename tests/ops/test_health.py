"""/healthz (the process answers) and /readyz (database and broker reachable), against real parts."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from tests import bounds
from tests.brokers import dead_broker_url, using_broker

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_database_or_broker(client: Client, django_assert_num_queries: Any) -> None:
    with using_broker(dead_broker_url()), django_assert_num_queries(0):
        response = client.get("/healthz")
        head = client.head("/healthz")

    assert response.status_code == head.status_code == 200
    assert response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_ok_when_database_and_broker_answer(client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_readyz_names_an_unreachable_broker_with_503_quickly(client: Client) -> None:
    with using_broker(dead_broker_url()):
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("OperationalError: ") and "Connection refused" in body["broker"]
    assert elapsed < bounds.broker_refusal(), f"the broker check took {elapsed:.1f}s"


def test_the_probes_need_no_csrf_token_and_refuse_writes(client: Client) -> None:
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/readyz").status_code == 405
    assert strict.post("/healthz").status_code == 405
    assert client.get("/readyz").status_code == 200
