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


# --- Dead letters -------------------------------------------------------------

from django.contrib import messages  # noqa: E402 -- the dead-letter admin starts here
from django.db.models import QuerySet  # noqa: E402
from django.http import HttpRequest  # noqa: E402

from eventbus.deadletters import operations  # noqa: E402
from eventbus.models import DeadLetter, DeadLetterReplay  # noqa: E402

# A report line per dead letter is useful for a few; for hundreds, the summary says it.
_MAX_REPORT_LINES = 20


class DeadLetterReplayInline(admin.TabularInline):
    model = DeadLetterReplay
    extra = 0
    can_delete = False
    fields = ("replayed_at", "replayed_by", "subscriber", "task_id", "skipped_by_ledger")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Dead letters, read-only; replay and purge go through eventbus.deadletters.operations."""

    list_display = ("last_failed_at", "kind", "subscriber", "event_type", "short_reason", "attempts", "queue")
    list_filter = ("kind", "subscriber", "event_type", "last_failed_at")
    search_fields = ("event_id", "task_id")
    date_hierarchy = "last_failed_at"
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    inlines = [DeadLetterReplayInline]
    actions = ["replay_selected", "dry_run_replay_selected", "purge_selected"]

    @admin.display(description="reason")
    def short_reason(self, obj: DeadLetter) -> str:
        reason = obj.reason
        return reason if len(reason) <= 100 else reason[:99] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Dead letters come from failures only.
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, object]:
        actions = super().get_actions(request)
        # "Purge selected" replaces it: one way to delete, through operations.purge.
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Replay selected dead letters", permissions=["change"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._replay(request, queryset, dry_run=False)

    @admin.action(description="Dry-run replay selected (send nothing)", permissions=["view"])
    def dry_run_replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._replay(request, queryset, dry_run=True)

    @admin.action(description="Purge selected dead letters", permissions=["delete"])
    def purge_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        count = operations.purge(queryset)
        self.message_user(request, f"Purged {count} dead letter{'s' if count != 1 else ''}.", messages.SUCCESS)

    def _replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter], *, dry_run: bool) -> None:
        report = operations.replay(queryset, by=request.user.get_username(), dry_run=dry_run)
        level = messages.WARNING if report.unsent or report.not_replayable else messages.SUCCESS
        self.message_user(request, report.summary(), level)
        lines = report.lines()
        for line in lines[:_MAX_REPORT_LINES]:
            self.message_user(request, line, messages.INFO)
        if len(lines) > _MAX_REPORT_LINES:
            self.message_user(request, f"… and {len(lines) - _MAX_REPORT_LINES} more", messages.INFO)


@admin.register(DeadLetterReplay)
class DeadLetterReplayAdmin(admin.ModelAdmin):
    list_display = ("replayed_at", "replayed_by", "subscriber", "task_id", "skipped_by_ledger", "dead_letter")
    list_filter = ("subscriber", "skipped_by_ledger")
    search_fields = ("task_id", "replayed_by", "dead_letter__event_id")
    readonly_fields = [f.name for f in DeadLetterReplay._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
