"""Ordering per aggregate: a verification delivered before its sign-up is deferred, then applied in order."""

from __future__ import annotations

from celery import current_app

from eventbus import ops_api
from eventbus.models import DeliveryStep, OutboxEvent, ProcessedEvent
from lab.narration import Verdict, check
from lab.stage import Stage
from project import queues
from signups.services import verify_email
from signups.verification import make_token, read_token

SUMMARY = "user:N's verification (#2) overtakes its sign-up (#1): analytics defers #2 until #1 is applied"

ANALYTICS = "analytics.record_event"


def run(stage: Stage) -> Verdict:
    from analytics.models import AnalyticsEvent

    user = stage.sign_up()
    verify_email(read_token(make_token(user.pk, user.email)))
    events = list(OutboxEvent.objects.order_by("sequence"))
    for event in events:
        stage.say(f"published {event.type} {event.aggregate} sequence #{event.sequence}")
    # Messages overtake each other in real life: a retry, a redelivery, two
    # workers, two relays. The demo takes both off the analytics queue, to
    # hand them to the worker in the wrong order.
    taken = 0
    with current_app.connection_for_read() as connection:
        while connection.default_channel.basic_get(queue=queues.ANALYTICS, no_ack=True) is not None:
            taken += 1
    stage.say(f"took {taken} messages off the analytics queue; they will arrive reversed")

    stage.worker("ordering", queues.ANALYTICS)
    signed_up, verified = events
    task = ops_api.get_subscription(ANALYTICS)
    current_app.send_task(task.name, args=(verified.to_wire(),), queue=task.queue)
    stage.say(f"delivered #{verified.sequence} {verified.type} first")
    stage.wait(
        "the verification to be deferred",
        lambda: DeliveryStep.objects.filter(event_id=verified.id, step=DeliveryStep.Step.WAITING).exists(),
    )
    stage.say(f"analytics rows so far: {AnalyticsEvent.objects.count()} (nothing counted out of order)")
    current_app.send_task(task.name, args=(signed_up.to_wire(),), queue=task.queue)
    stage.say(f"delivered #{signed_up.sequence} {signed_up.type}")
    stage.wait("both events applied", lambda: stage.ledger_rows(ANALYTICS) >= 2)
    applied = list(
        ProcessedEvent.objects.filter(subscriber=ANALYTICS)
        .order_by("processed_at", "id")
        .values_list("sequence", flat=True)
    )
    waits = stage.counter(ops_api.ORDER_WAITS, ANALYTICS)
    stage.say(f"ledger order of application: {' then '.join(f'#{s}' for s in applied)}; {waits} waits for #1")
    return check(
        f"#2 delivered first, deferred {waits} times, applied in order {applied}, "
        f"{AnalyticsEvent.objects.count()} analytics rows",
        taken == 2,
        waits >= 1,
        applied == [1, 2],
        AnalyticsEvent.objects.count() == 2,
    )
