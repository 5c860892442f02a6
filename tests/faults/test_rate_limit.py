"""The provider's rate limit holds for the whole cluster, and waiting for it costs no retry."""

from __future__ import annotations

import bisect
import re

import pytest
from django.test import Client

from eventbus.observability import counters
from project import queues
from tests.faults.harness import WELCOME, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIGNUPS = 30
PER_SECOND = 5
SENT = re.compile(r"send_welcome_email: event \S+ sent")


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window [t, t + 1s) that starts at an arrival (the busiest windows do)."""
    times = sorted(arrivals)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)) if times else 0


def test_the_email_rate_limit_holds_across_every_worker_process(workers: Workers, sink: ProviderSink) -> None:
    """Two workers with two pool processes each send email under EMAIL_RATE_LIMIT=5/s, shared
    through Redis: at the sink, no sliding one-second window of arrivals holds more than five.
    A task that finds no grant is rescheduled for when one frees up; that is not a failed
    attempt, so no retry is counted and nothing is dead-lettered."""
    limited = {"EMAIL_RATE_LIMIT": f"{PER_SECOND}/s"}
    mail = [workers.spawn(f"rate-mail-{n}", queues.NOTIFICATIONS, **limited) for n in range(2)]
    rest = workers.spawn("rate-rest", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1, **limited)
    workers.wait_ready(*mail, rest)

    # when: a burst of sign-ups, far faster than the provider's limit
    assert [r.status_code for r in sign_up_many(SIGNUPS, Client())] == [302] * SIGNUPS

    # then: every email arrives, never more than five in any second
    wait_until_delivered(sink, timeout=60)
    arrivals = [m.at for m in sink.messages]
    span = max(arrivals) - min(arrivals)
    busiest = busiest_second(arrivals)
    sent_by = {w.name: len(SENT.findall(w.log())) for w in mail}
    waits = counters.read(counters.RATE_LIMIT_WAITS).get(WELCOME, 0)
    print(
        f"{len(arrivals)} emails over {span:.1f}s, at most {busiest} in any second; "
        f"{waits} waits for a grant; sent per worker {sent_by}"
    )
    assert busiest <= PER_SECOND
    assert span >= (SIGNUPS - PER_SECOND) / PER_SECOND
    assert all(sent_by.values()) and sum(sent_by.values()) == SIGNUPS, "both workers share the sending"
    assert waits > 0

    # and: waiting used up no retry
    assert counters.read(counters.RETRIES).get(WELCOME) is None
    check_invariant(sink, "rate limit", committed=SIGNUPS)
