"""Raw readings expire after TELEMETRY_RETENTION_DAYS; the rollups stay."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from telemetry.models import Reading

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
