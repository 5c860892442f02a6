"""``simulate_devices`` against a live server: real HTTP, paced, with duplicates and a summary."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from telemetry.models import Device, Reading

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_the_simulator_drives_real_http_load_and_sums_it_up(live_server: Any, broker: None, redis_prefix: str) -> None:
    out = StringIO()
    call_command(
        "simulate_devices",
        "--devices", "4", "--rate", "400/s", "--duration", "1.5", "--batch", "10", "--threads", "4",
        "--resend", "0.2", "--url", live_server.url, stdout=out,
    )  # fmt: skip
    summary = out.getvalue().strip().splitlines()[-1]
    assert Device.objects.filter(name__startswith="sim-").count() == 4
    recorded = Reading.objects.count()
    assert recorded > 100, summary
    assert f"accepted {recorded} " in summary and "errors 0" in summary
    assert "duplicates 0" not in summary, "a fifth of the batches were resent"
    assert "p99" in summary
