"""Raw readings expire after TELEMETRY_RETENTION_DAYS, per-minute rollups after TELEMETRY_ROLLUP_RETENTION_DAYS.

Readings are deleted here, by ``telemetry.purge_readings`` on the telemetry
queue; rollups by the bus's retention task (eventbus/operations/retention.py), in the
same bounded chunks. ``register`` (called from ``TelemetryConfig.ready``)
names its tables to the bus, which imports no app.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from telemetry.models import DeviceMetric, Reading, Rollup

BATCH = 5000
"""Rows per DELETE: a short transaction, so the API's inserts wait milliseconds, not seconds."""
MAX_BATCHES = 40
"""DELETEs per run (200,000 rows); the next run, ten minutes later, takes the rest."""


def purge_expired(days: int, *, batch: int = BATCH, max_batches: int = MAX_BATCHES) -> int:
    """Delete readings received more than ``days`` ago, ``batch`` rows per transaction; returns how many."""
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(Reading.objects.filter(received_at__lt=cutoff).order_by().values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted += Reading.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            break
    return deleted


def register() -> None:
    """Name the telemetry tables to the bus's retention (eventbus/operations/retention.py)."""
    from eventbus import Retention
    from eventbus import register_retention as add

    add(
        Retention(
            "telemetry.readings",
            Reading,
            "received_at",
            "TELEMETRY_RETENTION_DAYS",
            "raw readings, the largest table; the rollups keep their summary",
            purged_by="telemetry.purge_readings",
        )
    )
    # By the minute its readings fell in: the rollups' (minute, metric) index serves the purge.
    add(
        Retention(
            "telemetry.rollups",
            Rollup,
            "minute",
            "TELEMETRY_ROLLUP_RETENTION_DAYS",
            "one row per device, metric and minute: 60 times fewer than readings at one a second",
        )
    )
    add(
        Retention(
            "telemetry.device_metrics",
            DeviceMetric,
            None,
            None,
            "the metric names each device uses: at most TELEMETRY_MAX_METRICS_PER_DEVICE a device, so bounded "
            "by the devices; a device's names go with the device",
        )
    )
