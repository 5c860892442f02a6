"""At-least-once delivery and idempotent consumers: the same event delivered three times, one effect."""

from __future__ import annotations

from celery import current_app

from eventbus import ops_api
from eventbus.models import OutboxEvent
from lab.narration import Verdict, check
from lab.stage import Stage
from project import queues

SUMMARY = "the same sign-up event delivered three times to each subscriber: one email, one row, two duplicates skipped"

DELIVERIES = 3


def run(stage: Stage) -> Verdict:
    from analytics.models import AnalyticsEvent

    stage.worker("duplicates", queues.NOTIFICATIONS, queues.ANALYTICS, concurrency=2)
    stage.sign_up()
    event = OutboxEvent.objects.get(type="user.signed_up")
    subscribers = ops_api.subscriptions_for(event.type)
    stage.say(f"event {event.id} dispatched once, as every sign-up is")
    stage.wait("the first delivery's effects", lambda: stage.ledger_rows() == len(subscribers) and stage.emails())
    stage.say(f"after delivery 1: {stage.emails()} email, {stage.ledger_rows()} ledger rows")

    # What a redelivery looks like on the wire: the same envelope, the same
    # event id, again (a worker died before its ack, a relay re-sent, a
    # producer retried). The demo sends it by hand, the way dispatch does.
    wire = event.to_wire()
    for delivery in range(2, DELIVERIES + 1):
        for subscription in subscribers:
            current_app.send_task(subscription.name, args=(wire,), queue=subscription.queue)
        stage.say(f"delivery {delivery}: the same envelope sent again to {len(subscribers)} queues")
    expected = len(subscribers) * (DELIVERIES - 1)

    def duplicates() -> int:
        return sum(int(ops_api.read_counter(ops_api.DUPLICATES).get(s.name, 0)) for s in subscribers)

    stage.wait(f"{expected} duplicates skipped", lambda: duplicates() >= expected)
    emails, distinct = stage.emails(), stage.distinct_emails()
    rows = stage.ledger_rows()
    analytics_rows = AnalyticsEvent.objects.filter(event_id=event.id).count()
    stage.say(f"the ledger holds {rows} rows (unique per event and subscriber); the sink holds {emails} email")
    return check(
        f"1 event, {DELIVERIES} deliveries per subscriber, {emails} email, {analytics_rows} analytics row, "
        f"{rows} ledger rows, {duplicates()} duplicates skipped",
        emails == distinct == 1,
        analytics_rows == 1,
        rows == len(subscribers),
        duplicates() == expected,
    )
