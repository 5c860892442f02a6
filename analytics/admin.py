from django.contrib import admin

from analytics.models import AnalyticsEvent


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(admin.ModelAdmin):
    list_display = ("type", "user_id", "occurred_at", "recorded_at")
    list_filter = ("type",)
    search_fields = ("event_id", "user_id")
    date_hierarchy = "occurred_at"
    readonly_fields = [f.name for f in AnalyticsEvent._meta.fields]
