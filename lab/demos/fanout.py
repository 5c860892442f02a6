"""Publish/subscribe fan-out: one event, one message on each subscriber's own queue, one effect each."""

from __future__ import annotations

from eventbus import ops_api
from eventbus.models import OutboxEvent, ProcessedEvent
from lab.narration import Verdict, check
from lab.stage import Stage
from project import queues

SUMMARY = "one sign-up event, two subscribers: a message on each one's queue, a ledger row and an effect each"


def run(stage: Stage) -> Verdict:
    subscribers = ops_api.subscriptions_for("user.signed_up")
    stage.say("subscribers of user.signed_up: " + ", ".join(f"{s.name} (queue {s.queue})" for s in subscribers))
    user = stage.sign_up()
    event = OutboxEvent.objects.get(type="user.signed_up")
    stage.say(f"signed up {user.email}: one transaction wrote the user and event {event.id} ({event.status})")
    depths = {q: stage.queue_depth(q) for q in (queues.NOTIFICATIONS, queues.ANALYTICS)}
    stage.say("no worker runs yet; messages waiting: " + ", ".join(f"{q}={n}" for q, n in depths.items()))
    for queue in depths:
        for message in stage.peek(queue):
            stage.say(f"  queue {queue}: {message}")

    stage.worker("fanout", queues.NOTIFICATIONS, queues.ANALYTICS, concurrency=2)
    stage.wait("a ledger row per subscriber", lambda: stage.ledger_rows() >= len(subscribers))
    stage.wait("the welcome email", lambda: stage.emails() >= 1)
    from analytics.models import AnalyticsEvent

    rows = stage.ledger_rows()
    analytics_rows = AnalyticsEvent.objects.filter(event_id=event.id).count()
    for entry in ProcessedEvent.objects.filter(event_id=event.id).order_by("subscriber"):
        runtime = f" in {entry.runtime_ms:.1f} ms" if entry.runtime_ms is not None else ""
        stage.say(f"ledger: {entry.subscriber} {entry.outcome} event {entry.event_id} on {entry.worker}{runtime}")
    stage.say(f"effects: {stage.emails()} email in the sink, {analytics_rows} analytics row")
    messages = sum(depths.values())
    return check(
        f"1 event, {messages} messages, {rows} ledger rows, {stage.emails()} email, {analytics_rows} analytics row",
        messages == len(subscribers) == 2,
        rows == 2,
        stage.emails() == 1,
        analytics_rows == 1,
    )
