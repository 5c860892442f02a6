from __future__ import annotations

from django.contrib import admin

from eventbus.models import AggregateSequence, OutboxEvent, ProcessedEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ("type", "aggregate", "sequence", "status", "occurred_at", "dispatched_at", "dispatch_attempts")
    list_filter = ("status", "type")
    search_fields = ("id", "aggregate", "correlation_id")
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]
    date_hierarchy = "occurred_at"


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(admin.ModelAdmin):
    list_display = ("subscriber", "event_type", "aggregate", "sequence", "processed_at", "event_id")
    list_filter = ("subscriber", "event_type")
    search_fields = ("event_id", "aggregate", "task_id")
    readonly_fields = [f.name for f in ProcessedEvent._meta.fields]


@admin.register(AggregateSequence)
class AggregateSequenceAdmin(admin.ModelAdmin):
    list_display = ("aggregate", "last_sequence")
    search_fields = ("aggregate",)
    readonly_fields = ("aggregate", "last_sequence")
