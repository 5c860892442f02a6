"""The email provider refuses for a while: the circuit breaker opens for every worker, nothing is lost or doubled."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client

from eventbus.contract.retry import RetryPolicy
from eventbus.observability import counters
from notifications.provider import email_breaker
from project import queues
from tests.conftest import wait_for
from tests.faults.harness import FAULT_ENV, WELCOME, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIGNUPS = 30
REFUSE_FOR = 6.0
RESET = float(FAULT_ENV["EMAIL_BREAKER_RESET_TIMEOUT"])
THRESHOLD = 5  # EMAIL_BREAKER_FAILURE_THRESHOLD's default
MAIL_PROCESSES = 4
# The workers' default policy for email (EVENTBUS_RETRY_* in FAULT_ENV, max_retries left at its default).
POLICY = RetryPolicy(
    base_delay=float(FAULT_ENV["EVENTBUS_RETRY_BASE_DELAY"]), max_delay=float(FAULT_ENV["EVENTBUS_RETRY_MAX_DELAY"])
)
RETRY_LINE = re.compile(r"send_welcome_email: event \S+ failed \(.*\); retry (\d+)/(\d+) in ([\d.]+)s")


def test_a_refusing_provider_opens_the_breaker_and_every_email_arrives_once_after(
    workers: Workers, sink: ProviderSink
) -> None:
    """The sink answers 451 to MAIL FROM for a few seconds. The first failures are retried
    with backoff; after EMAIL_BREAKER_FAILURE_THRESHOLD of them the breaker opens for all
    workers, and while it is open the provider sees only the probe every
    EMAIL_BREAKER_RESET_TIMEOUT seconds, not one attempt per task. Waiting for the breaker
    uses up no retry. Once the provider accepts again the next probe closes the breaker and
    every email arrives once; nothing is dead-lettered."""
    mail = [workers.spawn(f"smtp-mail-{n}", queues.NOTIFICATIONS) for n in range(MAIL_PROCESSES // 2)]
    rest = workers.spawn("smtp-rest", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1)
    workers.wait_ready(*mail, rest)

    # given: a provider that refuses every message for now
    sink.refuse("MAIL")
    refusing_since = time.monotonic()

    # when: people sign up
    assert [r.status_code for r in sign_up_many(SIGNUPS, Client())] == [302] * SIGNUPS

    # then: after a few failures the breaker opens, for every worker
    wait_for(lambda: email_breaker().state().state == "open", timeout=20, interval=0.02, what="the breaker open")
    opened_at = time.monotonic()
    refusals_when_opened = sink.refusals
    state = email_breaker().state()
    print(f"breaker open after {sink.refusals} refusals ({state.consecutive_failures} consecutive failures)")
    assert state.consecutive_failures >= THRESHOLD

    # and: while it stays open the provider sees only the probes
    time.sleep(max(0.0, REFUSE_FOR - (time.monotonic() - refusing_since)))
    sink.accept()
    open_for = time.monotonic() - opened_at
    while_open = sink.refusals - refusals_when_opened
    waits = counters.read(counters.BREAKER_WAITS).get(WELCOME, 0)
    # One probe per reset period, plus the sends that were already under way when it opened.
    allowed = int(open_for / RESET) + 1 + MAIL_PROCESSES
    print(
        f"open for {open_for:.1f}s: {while_open} attempts reached the provider ({allowed} allowed), "
        f"{waits} tasks waited for the breaker instead, {SIGNUPS} emails to send"
    )
    assert while_open <= allowed
    assert waits >= SIGNUPS - THRESHOLD - MAIL_PROCESSES
    assert while_open < SIGNUPS / 3

    # when the provider is back: everything arrives, once, and the breaker closes
    wait_until_delivered(sink, timeout=60)
    assert email_breaker().state().state == "closed"

    # and: the failures were retried with backoff below the ceilings, well within the retry budget
    retries = [(int(n), int(limit), float(delay)) for n, limit, delay in RETRY_LINE.findall(workers_log(workers))]
    print(f"retries: {len(retries)} (counter {counters.read(counters.RETRIES).get(WELCOME)}), refusals {sink.refusals}")
    assert retries, "no failed send was retried"
    assert len(retries) == sink.refusals == counters.read(counters.RETRIES)[WELCOME]
    for n, limit, delay in retries:
        # Logged rounded to 0.1 s.
        assert delay <= POLICY.ceiling(n - 1) + 0.05, (n, delay)
        assert n < limit
    check_invariant(sink, "smtp refusing", committed=SIGNUPS)


def workers_log(workers: Workers) -> str:
    return "\n".join(w.log() for w in workers.started)
