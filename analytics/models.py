"""Analytics records: one row per event, written by the analytics consumer."""

from __future__ import annotations

from django.db import models


class AnalyticsEvent(models.Model):
    # Unique: with the ledger, a second delivery can never add a second row.
    event_id = models.UUIDField(unique=True)
    type = models.CharField(max_length=100, db_index=True)
    user_id = models.BigIntegerField(null=True, db_index=True)
    occurred_at = models.DateTimeField(db_index=True)
    properties = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.type} user={self.user_id} at {self.occurred_at:%Y-%m-%d %H:%M}"
