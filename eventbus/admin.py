"""The event bus in Django admin: the outbox (with "send now"), the ledger, the delivery steps, dead letters.

Records are read-only here: events come from ``publish()``, ledger entries and
steps from the consumers, sequences from the producers' transactions. The
actions go through the bus's own functions (dispatch, dead-letter operations),
as the relay, the command line and the ops pages do
(eventbus/outbox/resend.py, eventbus/deadletters/operations.py).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from eventbus.deadletters import operations
from eventbus.models import (
    AggregateSequence,
    BrokerLoss,
    BrokerMarker,
    DeadLetter,
    DeadLetterReplay,
    DeliveryStep,
    OutboxEvent,
    ProcessedEvent,
)
from eventbus.outbox.resend import resend_unprocessed, send_now

# A report line per dead letter is useful for a few; for hundreds, the summary says it.
_MAX_REPORT_LINES = 20
_DETAIL_WIDTH = 100


def _clip(text: str, width: int = _DETAIL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ops_url(name: str, *args: object) -> str | None:
    """The URL of a page of the host's ops site (``ops:<name>``), or None in a host that has none."""
    try:
        return reverse(f"ops:{name}", args=args)
    except NoReverseMatch:
        return None


def timeline_link(event_id: object, text: str = "timeline") -> str:
    """A link to the event's page on the ops site (``ops:event``); blank without an event id or an ops site."""
    url = _ops_url("event", event_id) if event_id else None
    if url is None:
        return "—"
    return format_html('<a href="{}">{}</a>', url, text)


def body_cut_note(dead_letter: DeadLetter) -> str:
    """What an operator must know of a cut body; blank when it was kept whole."""
    if not dead_letter.body_truncated:
        return ""
    kept = len(dead_letter.raw_body.encode())
    return (
        f"yes: the raw body shows its first {kept} of {dead_letter.body_length} bytes; "
        f"sha256 of the whole: {dead_letter.body_sha256}. It cannot be replayed."
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the bus itself: listed and viewed in admin, never added, edited or deleted there."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- the outbox -----------------------------------------------------------------


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    """The outbox: every event published, with its dispatch state; "send now" for the waiting ones."""

    list_display = (
        "occurred_at",
        "type",
        "aggregate",
        "sequence",
        "status",
        "dispatched_at",
        "dispatch_attempts",
        "short_error",
        "timeline",
    )
    list_filter = ("status", "type", "occurred_at")
    search_fields = ("id", "aggregate", "correlation_id")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at",)
    readonly_fields = ("timeline", *(f.name for f in OutboxEvent._meta.fields))
    actions = ["send_selected_now", "resend_to_unprocessed"]

    @admin.display(description="timeline")
    def timeline(self, obj: OutboxEvent) -> str:
        return timeline_link(obj.pk, "the event's timeline")

    @admin.display(description="last error")
    def short_error(self, obj: OutboxEvent) -> str:
        return _clip(obj.last_error) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Events come from publish(), inside the change they report.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # The outbox is the events' history; ordering reads predecessors from it.
        return False

    @admin.action(description="Send now (pending and deferred events)", permissions=["change"])
    def send_selected_now(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        report = send_now(queryset)
        self.message_user(request, report.summary(), messages.WARNING if report.failed else messages.SUCCESS)

    @admin.action(description="Send again to subscribers that have not processed it", permissions=["change"])
    def resend_to_unprocessed(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        events, sent, error = resend_unprocessed(queryset)
        text = f"sent {sent} message{'s' if sent != 1 else ''} for {events} event{'s' if events != 1 else ''}"
        text += " (only dispatched events, only to subscribers whose ledger lacks them)"
        if error:
            self.message_user(request, f"{text}; stopped, the broker failed: {error}", messages.WARNING)
        else:
            self.message_user(request, text, messages.SUCCESS)


# --- what the consumers write ---------------------------------------------------------


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnlyAdmin):
    """The ledger: one row per (event, subscriber) handled, processed or shed."""

    list_display = (
        "processed_at",
        "subscriber",
        "outcome",
        "event_type",
        "aggregate",
        "sequence",
        "worker",
        "runtime",
        "timeline",
    )
    list_filter = ("outcome", "subscriber", "event_type", "processed_at")
    search_fields = ("event_id", "aggregate", "task_id", "worker")
    date_hierarchy = "processed_at"
    ordering = ("-processed_at",)

    @admin.display(description="run time", ordering="runtime_ms")
    def runtime(self, obj: ProcessedEvent) -> str:
        return "—" if obj.runtime_ms is None else f"{obj.runtime_ms:.1f} ms"

    @admin.display(description="timeline")
    def timeline(self, obj: ProcessedEvent) -> str:
        return timeline_link(obj.event_id)


@admin.register(DeliveryStep)
class DeliveryStepAdmin(ReadOnlyAdmin):
    """The unusual steps of deliveries: retries, waits, shedding, deferral, dead letters, replays."""

    list_display = ("at", "step", "subscriber", "short_detail", "worker", "task_id", "timeline")
    list_filter = ("step", "subscriber", "at")
    search_fields = ("event_id", "task_id", "worker", "detail")
    date_hierarchy = "at"
    ordering = ("-at", "-id")

    @admin.display(description="detail")
    def short_detail(self, obj: DeliveryStep) -> str:
        return _clip(obj.detail)

    @admin.display(description="timeline")
    def timeline(self, obj: DeliveryStep) -> str:
        return timeline_link(obj.event_id)


@admin.register(BrokerLoss)
class BrokerLossAdmin(ReadOnlyAdmin):
    """Times the broker was found to have lost its data (operations/brokerwatch.py), and the reconciler's repair."""

    list_display = ("detected_at", "recovered_at", "redelivered", "reason")
    date_hierarchy = "detected_at"
    ordering = ("-detected_at",)


@admin.register(BrokerMarker)
class BrokerMarkerAdmin(ReadOnlyAdmin):
    """The token the broker's Redis must still hold; rotated at every check."""

    list_display = ("name", "written_at", "token")


@admin.register(AggregateSequence)
class AggregateSequenceAdmin(ReadOnlyAdmin):
    """The last sequence handed out per aggregate; deleting one would reuse numbers, so nobody can."""

    list_display = ("aggregate", "last_sequence", "events")
    search_fields = ("aggregate",)
    ordering = ("aggregate",)

    @admin.display(description="events")
    def events(self, obj: AggregateSequence) -> str:
        url = _ops_url("events")
        if url is None:
            return "—"
        return format_html('<a href="{}?{}">{}</a>', url, urlencode({"q": obj.aggregate}), "find them")


# --- dead letters -------------------------------------------------------------


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
    readonly_fields = ("timeline", "body_cut", *(f.name for f in DeadLetter._meta.fields))
    inlines = [DeadLetterReplayInline]
    actions = ["replay_selected", "dry_run_replay_selected", "purge_selected"]

    @admin.display(description="reason")
    def short_reason(self, obj: DeadLetter) -> str:
        return _clip(obj.reason)

    @admin.display(description="event timeline")
    def timeline(self, obj: DeadLetter) -> str:
        return timeline_link(obj.event_id, "the event's timeline")

    @admin.display(description="body cut")
    def body_cut(self, obj: DeadLetter) -> str:
        # The raw body shown below is then a preview (EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES).
        return body_cut_note(obj) or "no: the whole body is kept"

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
