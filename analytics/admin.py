"""Analytics rows in Django admin, read-only: the analytics consumer writes them, once per event."""

from __future__ import annotations

from django.contrib import admin

from analytics.models import AnalyticsEvent
from eventbus.admin import ReadOnlyAdmin, timeline_link


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(ReadOnlyAdmin):
    list_display = ("occurred_at", "type", "user_id", "recorded_at", "timeline")
    list_filter = ("type", "occurred_at", "recorded_at")
    search_fields = ("event_id", "user_id")
    date_hierarchy = "occurred_at"

    @admin.display(description="timeline")
    def timeline(self, obj: AnalyticsEvent) -> str:
        return timeline_link(obj.event_id)
