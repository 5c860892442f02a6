"""An operator's two ways to send outbox events by hand: "send now" and "resend unprocessed".

Both go through the relay's and the fan-out's own functions, so a lease, the
subscribers' queues and backpressure apply as they do for the relay; Django
admin's outbox actions call them (eventbus/admin.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from eventbus.contract import registry
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.outbox.fanout import DispatchError, mark_dispatched, send_many
from eventbus.outbox.relay import relay
from eventbus.protection import backpressure


@dataclass
class SendReport:
    """What "send now" did with the selected outbox rows."""

    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    """Already dispatched, or leased by a relay at this moment."""
    failed: int = 0
    error: str = ""

    def summary(self) -> str:
        text = f"sent {self.sent}, deferred again {self.deferred} (queue still full), skipped {self.skipped}"
        text += " (already dispatched or being sent by a relay)"
        if self.failed:
            text += f"; {self.failed} not sent, the broker failed: {self.error}. The relay will try again."
        return text


def send_now(queryset: QuerySet[OutboxEvent]) -> SendReport:
    """Hand the selected pending and deferred events to the broker now, as the relay would.

    Each row is leased first (the relay's conditional UPDATE), so a relay
    running at the same moment does not send it too; dispatched rows and
    rows another relay holds are skipped. A deferred row goes to the
    subscribers still waiting for it, and backpressure still applies: a queue
    still above its mark defers it again. A broker failure stops the sending
    and leaves the rest pending for the relay, with the error recorded.
    """
    ids = list(queryset.values_list("pk", flat=True))
    result = relay(grace=0, ids=ids)
    handled = result.dispatched + result.deferred + result.failed
    return SendReport(
        sent=result.dispatched,
        deferred=result.deferred,
        skipped=len(ids) - handled,
        failed=result.failed,
        error=result.error,
    )


def resend_unprocessed(queryset: QuerySet[OutboxEvent]) -> tuple[int, int, str]:
    """Send each selected dispatched event again to the subscribers whose ledger lacks it.

    The repair for a message lost after dispatch (a broker that lost its data,
    a queue purged by hand). A subscriber that did process the event gets
    nothing; one that is just slow gets a duplicate, which its ledger skips.
    Returns (events sent, messages sent, broker error or "").
    """
    rows = list(queryset.filter(status=OutboxEvent.Status.DISPATCHED).order_by("created_at"))
    done = {
        (event_id, subscriber)
        for event_id, subscriber in ProcessedEvent.objects.filter(event_id__in=[r.id for r in rows]).values_list(
            "event_id", "subscriber"
        )
    }
    only = {str(r.id): [s.name for s in registry.subscriptions_for(r.type) if (r.id, s.name) not in done] for r in rows}
    wanted = [r for r in rows if only[str(r.id)]]
    if not wanted:
        return 0, 0, ""
    backpressure.forget_depths()
    error = ""
    try:
        outcomes = send_many((r.to_wire() for r in wanted), only=only)
    except DispatchError as exc:
        outcomes, error = exc.done, str(exc)
    mark_dispatched(outcomes)
    return len(outcomes), sum(len(o.sent) for o in outcomes), error
