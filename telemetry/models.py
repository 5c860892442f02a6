"""Devices, their raw readings, and the per-minute rollups the telemetry consumer folds them into."""

from __future__ import annotations

from django.db import models


class Device(models.Model):
    """A source of readings. Its API token is shown once at registration; only its SHA-256 is stored."""

    name = models.CharField(max_length=100, unique=True)
    # sha256 hex of the token: a high-entropy random token needs no slow hash,
    # and a unique index makes the lookup one query.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    active = models.BooleanField(default=True, help_text="An inactive device's requests are refused with 401.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeviceMetric(models.Model):
    """A metric name a device has used: at most TELEMETRY_MAX_METRICS_PER_DEVICE of them (telemetry/metric_names.py).

    A name is recorded with the first batch that uses it and kept as long as
    its device (the table holds at most the limit per device). Counting these
    rows (one index range, no longer than the limit) keeps the check cheap.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "name"], name="telemetry_devicemetric_name")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.name}"


class Reading(models.Model):
    """One accepted reading, kept for TELEMETRY_RETENTION_DAYS.

    Unique (device, seq): a device that resends a batch after a timeout finds
    its readings here and they count as duplicates, never twice.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="readings")
    seq = models.BigIntegerField()
    at = models.DateTimeField()
    metric = models.CharField(max_length=64)
    value = models.FloatField()
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "seq"], name="telemetry_reading_device_seq")]

    def __str__(self) -> str:
        return f"{self.device_id}#{self.seq} {self.metric}={self.value}"


class Rollup(models.Model):
    """Readings of one device and metric in one minute (by the reading's own time): count, sum, min, max.

    Written only by upserts that add to it (telemetry/rollup.py), so a late
    reading updates its minute's row.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="rollups")
    metric = models.CharField(max_length=64)
    minute = models.DateTimeField()
    count = models.BigIntegerField()
    total = models.FloatField()
    minimum = models.FloatField()
    maximum = models.FloatField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "metric", "minute"], name="telemetry_rollup_bucket"),
        ]
        indexes = [models.Index(fields=["minute", "metric"], name="telemetry_rollup_minute")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.metric} {self.minute:%Y-%m-%d %H:%M} n={self.count}"

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
