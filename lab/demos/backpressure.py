"""Backpressure: a flood above the high-water mark; the sheddable subscriber sheds, the critical one defers."""

from __future__ import annotations

import time

from eventbus import ops_api
from eventbus.models import OutboxEvent, ProcessedEvent
from lab.narration import Verdict, check
from lab.stage import DemoTimeout, Stage
from project import queues

SUMMARY = "ten sign-ups against a high-water mark of 3 with no worker: analytics sheds, email waits in the outbox"

MARK = 3
SIGN_UPS = 10
ENV = {"EVENTBUS_HIGH_WATER_MARKS": f"{queues.ANALYTICS}={MARK},{queues.NOTIFICATIONS}={MARK}"}

WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


def run(stage: Stage) -> Verdict:
    marks = {q: ops_api.high_water_mark(q) for q in (queues.NOTIFICATIONS, queues.ANALYTICS)}
    stage.say("high-water marks: " + ", ".join(f"{q}={m}" for q, m in marks.items()) + "; no worker runs yet")
    for n in range(1, SIGN_UPS + 1):
        stage.sign_up()
        if n in (1, MARK, MARK + 1, SIGN_UPS):
            stage.say(
                f"after {n} sign-ups: queue notifications={stage.queue_depth(queues.NOTIFICATIONS)}, "
                f"analytics={stage.queue_depth(queues.ANALYTICS)}; "
                f"deferred in the outbox {OutboxEvent.objects.filter(status='deferred').count()}, "
                f"shed {stage.ledger_rows(ANALYTICS, ProcessedEvent.Outcome.SHED)}"
            )
    shed = stage.ledger_rows(ANALYTICS, ProcessedEvent.Outcome.SHED)
    deferred = OutboxEvent.objects.filter(status=OutboxEvent.Status.DEFERRED).count()
    steps = stage.skip_steps()
    stage.say(
        f"every sign-up succeeded; {shed} analytics events shed (counted), {deferred} emails held in the outbox "
        f"({steps} shed/deferred steps on the events' timelines)"
    )

    stage.worker("backpressure", queues.NOTIFICATIONS, queues.ANALYTICS, concurrency=2)
    relayed = 0
    deadline = time.monotonic() + 20
    while OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).exists():
        if time.monotonic() > deadline:
            raise DemoTimeout("the relay did not drain the deferred events in 20s")
        result = ops_api.relay(grace=0)
        if result.dispatched:
            relayed += result.dispatched
            stage.say(f"relay: sent {result.dispatched} deferred events as the queue drained ({result.deferred} wait)")
        stage.skip_steps()
        time.sleep(0.3)
    stage.wait(f"{SIGN_UPS} welcome emails", lambda: stage.emails() >= SIGN_UPS)
    from analytics.models import AnalyticsEvent

    recorded = AnalyticsEvent.objects.count()
    shed_counted = stage.counter(ops_api.SHED, ANALYTICS)
    # Counted at each deferral: a row the relay finds still above the mark is deferred (and counted) again.
    deferrals = stage.counter(ops_api.DEFERRED, WELCOME)
    return check(
        f"{SIGN_UPS} sign-ups, mark {MARK}: analytics {recorded} recorded + {shed} shed, "
        f"email {deferred} deferred ({deferrals} deferrals) then relayed, {stage.emails()} emails",
        shed > 0 and recorded + shed == SIGN_UPS,
        shed_counted == shed,
        deferred > 0 and deferrals >= deferred == relayed,
        stage.emails() == SIGN_UPS == stage.distinct_emails(),
    )
