"""Telemetry housekeeping, run by beat on the telemetry queue."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from telemetry.retention import purge_expired


@shared_task(name="telemetry.purge_readings", ignore_result=True)
def purge_readings() -> int:
    """Delete raw readings older than TELEMETRY_RETENTION_DAYS, in bounded batches."""
    return purge_expired(settings.TELEMETRY_RETENTION_DAYS)
