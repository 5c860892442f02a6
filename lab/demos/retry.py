"""Retries with backoff: the provider answers 451 three times; each retry waits a jittered, doubling delay."""

from __future__ import annotations

import re

from eventbus import ops_api
from eventbus.models import DeliveryStep
from lab.narration import Verdict, check
from lab.stage import Stage
from notifications.subscribers import send_welcome_email
from project import queues

SUMMARY = "the SMTP provider refuses three times (451): three retries with exponential backoff and jitter, one email"

# The breaker would open after 5 failures in a row; this demo is about retries alone.
ENV = {"EMAIL_BREAKER_FAILURE_THRESHOLD": "10", "EVENTBUS_RETRY_BASE_DELAY": "0.5"}

FAILURES = 3
WELCOME = send_welcome_email.name


def run(stage: Stage) -> Verdict:
    policy = ops_api.get_subscription(WELCOME).retry
    ceilings = ", ".join(f"{policy.ceiling(n):g}s" for n in range(FAILURES + 1))
    stage.say(
        f"retry policy of {WELCOME}: {policy.max_retries} retries, delay drawn from [0, min(cap, base·2ⁿ)], "
        f"base {policy.base_delay:g}s, cap {policy.max_delay:g}s; ceilings {ceilings}"
    )
    stage.worker("retry", queues.NOTIFICATIONS)
    stage.sink.refuse_next(FAILURES)
    stage.say(f"the provider will answer 451 (try again later) to the next {FAILURES} sends")
    stage.sign_up()
    stage.wait("the welcome email", lambda: stage.emails() >= 1, timeout=25)
    retries = list(DeliveryStep.objects.filter(subscriber=WELCOME, step=DeliveryStep.Step.RETRIED).order_by("at"))
    delays = [float(m.group(1)) for s in retries if (m := re.search(r"in ([0-9.]+)s$", s.detail))]
    first = retries[0].at if retries else None
    arrived = stage.sink.messages[0].at if stage.sink.messages else 0.0
    if first is not None:
        stage.say(f"the email arrived {arrived - first.timestamp():.2f}s after the first failure")
    counted = stage.counter(ops_api.RETRIES, WELCOME)
    schedule = " + ".join(f"{d:g}s" for d in delays)
    # The step's text rounds the delay to 0.1 s.
    within = all(d <= policy.ceiling(n) + 0.05 for n, d in enumerate(delays))
    return check(
        f"{stage.sink.refusals} refusals, {counted} retries (waits {schedule or 'none'}), "
        f"{stage.emails()} email, {stage.ledger_rows(WELCOME)} ledger row",
        stage.sink.refusals == FAILURES,
        counted == FAILURES == len(delays),
        within,
        stage.emails() == 1,
        stage.ledger_rows(WELCOME) == 1,
    )
