"""Folding readings into per-device, per-metric, per-minute rollups: count, sum, min and max.

One upsert per chunk of buckets, which adds to a bucket's row instead of
replacing it: a late reading updates its minute, and two workers folding
into the same bucket at once both count (the database serializes the rows).
Folding an event twice would count it twice; the ledger (one entry per event
and subscriber, in the same transaction) is what keeps it to once, and the
API's unique (device, seq) keeps a reading in one event only.

The arithmetic stays finite: the API refuses a value beyond MAX_ABS_VALUE
(telemetry/schemas.py), a reading beyond it that was accepted before that
bound existed is folded as the bound itself (saturated, and logged), and a
stored total beyond TOTAL_CEILING (only an older row can hold one) is brought
back to it before anything is added. So no sum reaches float64's end (1.8e308,
PostgreSQL's double precision too): no inf, no Inf + -Inf = NaN, and no
"value out of range" from PostgreSQL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from eventbus import Envelope, PoisonMessage
from telemetry.schemas import MAX_ABS_VALUE

log = logging.getLogger(__name__)

# 8 parameters per row: 100 rows stay far below SQLite's and PostgreSQL's limits.
CHUNK = 100
TOTAL_CEILING = 1e300
"""No sum of bounded readings comes near it (that would take 1e285 readings in one minute), and adding one
chunk's bucket to a total held at it stays far below 1.8e308."""


@dataclass
class Bucket:
    count: int
    total: float
    minimum: float
    maximum: float

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)


Key = tuple[int, str, datetime]


def buckets_of(events: Iterable[Envelope]) -> dict[Key, Bucket]:
    """The buckets the events' readings fall into; raises PoisonMessage for a reading that cannot be folded."""
    buckets: dict[Key, Bucket] = {}
    for event in events:
        device_id = event.payload.device_id
        for reading in event.payload.readings:
            metric, minute, value = _parse(event, reading)
            bucket = buckets.get((device_id, metric, minute))
            if bucket is None:
                buckets[(device_id, metric, minute)] = Bucket(1, value, value, value)
            else:
                bucket.add(value)
    return buckets


def _parse(event: Envelope, reading: Any) -> tuple[str, datetime, float]:
    try:
        metric = reading["metric"]
        at = datetime.fromisoformat(reading["at"])
        value = reading["value"]
        if not isinstance(metric, str) or not metric or at.tzinfo is None:
            raise ValueError("metric must be a name and at an aware time")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"value {value!r} is not a finite number")
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"event {event.id}: reading {reading!r} cannot be folded: {exc}") from exc
    value = float(value)
    if abs(value) > MAX_ABS_VALUE:
        # Accepted before the API had its bound: the rest of its event is good,
        # so this one is folded as "at least the bound" rather than refused.
        saturated = math.copysign(MAX_ABS_VALUE, value)
        log.warning("event %s: value %r beyond MAX_ABS_VALUE folded as %r", event.id, value, saturated)
        value = saturated
    return metric, at.replace(second=0, microsecond=0), value


def fold(events: list[Envelope]) -> int:
    """Add the events' readings to their buckets; returns the number of buckets written."""
    buckets = buckets_of(events)
    if not buckets:
        return 0
    table = "telemetry_rollup"
    least, greatest = ("MIN", "MAX") if connection.vendor == "sqlite" else ("LEAST", "GREATEST")
    stored_total = f"{greatest}({least}({table}.total, {TOTAL_CEILING!r}), {-TOTAL_CEILING!r})"
    # Stored as the ORM stores them (naive UTC text on SQLite), so that the
    # ORM's filters and the unique index see the same values.
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    rows = list(buckets.items())
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list[Any] = []
            for (device_id, metric, minute), b in chunk:
                params += [device_id, metric, adapt(minute), b.count, b.total, b.minimum, b.maximum, now]
            cursor.execute(
                f"INSERT INTO {table} (device_id, metric, minute, count, total, minimum, maximum, updated_at) "
                f"VALUES {placeholders} "
                "ON CONFLICT (device_id, metric, minute) DO UPDATE SET "
                f"count = {table}.count + excluded.count, total = {stored_total} + excluded.total, "
                f"minimum = {least}({table}.minimum, excluded.minimum), "
                f"maximum = {greatest}({table}.maximum, excluded.maximum), updated_at = excluded.updated_at",
                params,
            )
    return len(rows)
