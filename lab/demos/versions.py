"""Schema evolution: version-1 events, waiting where events wait, are delivered as version 2.

``user.signed_up`` version 2 added ``channel`` (signups/events.py), with an
upcaster from version 1. Three people signed up before that deploy, so their
events are version 1: one still queued, one still in the outbox, one whose
welcome email bounced and sits in the dead-letter store. The worker running
version-2 code hands every one of them to the subscribers as version 2, and
a version this code has never heard of is a poison dead letter, not a crash.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from celery import current_app
from django.contrib.auth import get_user_model

from eventbus import Envelope, ops_api
from eventbus.models import DeadLetter, OutboxEvent
from lab.narration import Verdict, check
from lab.stage import PASSWORD, Stage
from notifications.subscribers import send_welcome_email
from project import queues
from signups.models import Account

SUMMARY = (
    "user.signed_up gained a field (version 2): a queued message, an outbox row and a dead letter of version 1 "
    "reach the subscribers as version 2; version 3 is poison"
)

WELCOME = send_welcome_email.name


def _person(local_part: str) -> Any:
    """A user as the sign-up made them before the deploy (their event is built by the caller, at version 1)."""
    email = f"{local_part}@example.com"
    user = get_user_model().objects.create_user(username=email, email=email, password=PASSWORD)
    Account.objects.create(user=user)
    return user


def signed_up_v1(user_id: int, version: int = 1) -> dict[str, Any]:
    """The envelope version-1 code published for a sign-up: its payload has no ``channel``.

    Also what tests/contract/test_versions.py puts on the queue, in the outbox and in the dead letters."""
    return {
        "id": str(uuid.uuid4()),
        "type": "user.signed_up",
        "version": version,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "aggregate": f"user:{user_id}",
        "sequence": 1,
        "correlation_id": f"versions-{uuid.uuid4().hex[:8]}",
        "causation_id": None,
        "payload": {"user_id": user_id},
    }


def _queue(wire: dict[str, Any]) -> None:
    """Put ``wire`` on every subscriber's queue, as dispatch did before the deploy."""
    for subscription in ops_api.subscriptions_for(wire["type"]):
        current_app.send_task(subscription.name, args=(wire,), queue=subscription.queue)


def run(stage: Stage) -> Verdict:
    from analytics.models import AnalyticsEvent

    queued, relayed, bounced = _person("queued1"), _person("outbox2"), _person("bounce3")
    wires = {user.pk: signed_up_v1(user.pk) for user in (queued, relayed, bounced)}
    stage.say("user.signed_up is at version 2 (it added channel); its upcaster from version 1 says 'web'")

    _queue(wires[queued.pk])
    stage.say(f"{queued.email}: a version-1 message waits on each subscriber's queue: {stage.peek(queues.ANALYTICS)}")
    OutboxEvent.objects.create(**{**wires[relayed.pk], "occurred_at": datetime.now(UTC)})
    stage.say(f"{relayed.email}: a version-1 outbox row, not sent yet (the broker was down at the time)")
    _queue(wires[bounced.pk])
    stage.sink.handler.reject_containing = "bounce"
    stage.say(f"{bounced.email}: a version-1 message whose welcome email the provider will refuse (550)")
    poison = signed_up_v1(queued.pk, version=3)
    current_app.send_task("analytics.record_event", args=(poison,), queue=queues.ANALYTICS)
    stage.say("and a version-3 message, from code newer than this one")
    decoded = Envelope.from_dict(wires[queued.pk])
    stage.say(
        f"the stored form says version 1, {wires[queued.pk]['payload']}; the decoder reads it as "
        f"version {decoded.version}, {decoded.payload}"
    )

    stage.worker("versions", queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER, concurrency=2)
    stage.say(f"relay: {ops_api.relay(grace=0).dispatched} outbox row sent, as stored (version 1)")
    stage.wait("two dead letters", lambda: DeadLetter.objects.count() >= 2)
    for dead in DeadLetter.objects.order_by("kind"):
        version = (dead.body or {}).get("version")
        stage.say(f"dead letter ({dead.kind}) of {dead.event_type} v{version}: {dead.exception_message[:110]}")
    stage.wait("two welcome emails", lambda: stage.emails() >= 2)

    stage.sink.handler.reject_containing = None
    stage.say("the mailbox is fixed; the operator replays the bounced welcome email (its body still version 1)")
    report = ops_api.replay_dead_letters(DeadLetter.objects.filter(kind="permanent"), by="demo")
    stage.say(report.summary())
    stage.wait("the replayed email", lambda: stage.ledger_rows(WELCOME) >= 3 and stage.emails() >= 3)
    stage.wait("three analytics rows", lambda: AnalyticsEvent.objects.count() >= 3)

    channels = sorted(str(row.properties.get("channel")) for row in AnalyticsEvent.objects.all())
    stage.say(f"analytics recorded channel {channels} from three version-1 events")
    kinds = sorted(DeadLetter.objects.values_list("kind", flat=True))
    poisoned = DeadLetter.objects.filter(kind="poison").first()
    reason = poisoned.exception_message if poisoned else ""
    stored = OutboxEvent.objects.get(pk=wires[relayed.pk]["id"])
    return check(
        f"3 version-1 events (queued, outbox, dead letter): {stage.emails()} welcome emails, "
        f"{len(channels)} analytics rows with channel 'web'; dead letters {', '.join(kinds)}; "
        f"the version-3 message: {reason[:90]}",
        channels == ["web", "web", "web"],
        stage.emails() == 3 == stage.distinct_emails(),
        stage.ledger_rows(WELCOME) == 3,
        kinds == ["permanent", "poison"],
        "this code reads versions 1 to 2" in reason,
        stored.version == 1 and stored.status == OutboxEvent.Status.DISPATCHED,
    )
