"""Readings and requests for the telemetry tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from telemetry import tokens
from telemetry.models import Device

URL = "/api/v1/readings"


def reading(seq: int, *, metric: str = "temp", value: float = 20.0, minutes_ago: float = 0.0) -> dict[str, Any]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return {"seq": seq, "at": at.isoformat().replace("+00:00", "Z"), "metric": metric, "value": value}


def batch(first: int, count: int, **kwargs: Any) -> dict[str, Any]:
    return {"readings": [reading(seq, **kwargs) for seq in range(first, first + count)]}


def device(name: str = "sensor-1") -> tuple[Device, str]:
    return tokens.register(name)


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()
