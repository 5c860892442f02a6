"""A batch of readings the database cannot take now is answered 503 with Retry-After, not a 500.

A real fault: the connection is pointed at a port nothing listens on, as in
tests/signups/test_signup_database_unavailable.py. The device keeps its batch and sends it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from telemetry.api import DATABASE_RETRY_AFTER
from telemetry.models import Reading
from tests.signups.test_signup_database_unavailable import database_unreachable
from tests.telemetry.helpers import URL, batch, body, device

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]


def test_a_batch_the_database_cannot_take_is_answered_503_and_taken_when_sent_again(
    tmp_path: Path, broker: None, redis_prefix: str
) -> None:
    _, token = device("sensor-db")
    client = Client()

    with database_unreachable(tmp_path):
        refused = client.post(
            URL, body(batch(1, 3)), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )

    assert refused.status_code == 503
    assert refused["Retry-After"] == str(DATABASE_RETRY_AFTER)
    assert refused.json() == {
        "detail": "the database is briefly unavailable; nothing was accepted",
        "retry_after": DATABASE_RETRY_AFTER,
    }
    assert not Reading.objects.exists()

    # when the database is back, the same batch is taken
    again = client.post(URL, body(batch(1, 3)), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert again.status_code == 202, again.content
    assert Reading.objects.count() == 3
