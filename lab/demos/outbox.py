"""The transactional outbox: the broker is down, sign-ups still succeed; the relay sends their events later."""

from __future__ import annotations

import time

from eventbus import ops_api
from eventbus.models import OutboxEvent
from lab.narration import Verdict, check
from lab.stage import DemoTimeout, Stage
from project import queues

SUMMARY = (
    "Redis stopped: three sign-ups still commit, their events wait in the outbox; Redis back, the relay sends them"
)

SIGN_UPS = 3


def run(stage: Stage) -> Verdict:
    from analytics.models import AnalyticsEvent

    stage.stop_redis()
    stage.say(f"redis-server stopped: the broker at port {stage.redis_port} refuses connections")
    timings = []
    for _ in range(SIGN_UPS):
        started = time.monotonic()
        user = stage.sign_up()
        timings.append((time.monotonic() - started) * 1000)
        row = OutboxEvent.objects.get(payload__user_id=user.pk)
        stage.say(f"sign-up {user.email} committed in {timings[-1]:.0f} ms; event {row.status}: {row.last_error[:70]}")
    pending = OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count()

    stage.start_redis()
    stage.say("redis-server started again")
    relayed = 0
    deadline = time.monotonic() + 15
    while OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).exists():
        if time.monotonic() > deadline:
            raise DemoTimeout("the relay did not send the pending events in 15s")
        result = ops_api.relay(grace=0)
        relayed += result.dispatched
        stage.say(f"relay: {result.dispatched} sent, {result.failed} failed {result.error[:60]}".rstrip())
        time.sleep(0.2)

    stage.worker("outbox", queues.NOTIFICATIONS, queues.ANALYTICS, concurrency=2)
    stage.wait(f"{SIGN_UPS} emails and analytics rows", lambda: stage.emails() >= SIGN_UPS)
    stage.wait("the analytics rows", lambda: AnalyticsEvent.objects.count() >= SIGN_UPS)
    return check(
        f"broker down: {SIGN_UPS} sign-ups committed (slowest {max(timings):.0f} ms), {pending} events pending; "
        f"broker back: {relayed} relayed, {stage.emails()} emails, {AnalyticsEvent.objects.count()} analytics rows",
        pending == SIGN_UPS == relayed,
        stage.emails() == SIGN_UPS == stage.distinct_emails(),
        AnalyticsEvent.objects.count() == SIGN_UPS,
    )
