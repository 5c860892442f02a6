"""The events the telemetry API produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventbus import event_type


@event_type("telemetry.readings_received", version=1)
@dataclass(frozen=True)
class ReadingsReceived:
    """One accepted batch: only its new readings, each ``{"seq", "at", "metric", "value"}`` (``at`` ISO 8601).

    The device is named by id; the payload carries no token.
    """

    device_id: int
    readings: list[dict[str, Any]]
