"""Subscribers that fail: a permanent failure is dead-lettered at once, a transient one after its retries."""

from __future__ import annotations

import itertools

import pytest
from django.test import Client

from eventbus.contract.retry import RetryPolicy
from eventbus.models import DeadLetter
from eventbus.observability import counters
from project import queues
from tests.conftest import wait_for
from tests.faults.faultapp.probes import (
    PERMANENT,
    TRANSIENT,
    TRANSIENT_BASE_DELAY,
    TRANSIENT_MAX_DELAY,
    TRANSIENT_MAX_RETRIES,
    attempts,
)
from tests.faults.harness import probe_wire, send_probe, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

POLICY = RetryPolicy(max_retries=TRANSIENT_MAX_RETRIES, base_delay=TRANSIENT_BASE_DELAY, max_delay=TRANSIENT_MAX_DELAY)
# What a retry may take beyond its drawn delay: the retry is published, fetched by a
# worker, held until its ETA and handed to a pool process, on a loaded two-core machine.
SLACK = 1.0
SIGNUPS = 3


def test_permanent_failures_are_dead_lettered_at_once_and_transient_ones_after_their_retries(
    workers: Workers, sink: ProviderSink
) -> None:
    """A subscriber that raises a permanent error is dead-lettered after one attempt and zero
    retries. One that raises its declared transient error every time is retried exactly
    ``max_retries`` times (here 4, so 5 attempts), then dead-lettered as retries_exhausted.

    The policy is exponential backoff with full jitter: each delay is drawn uniformly from
    [0, ceiling], where ceiling = min(cap, base * 2**n). The delays themselves are random,
    so the test checks each observed gap against its ceiling (plus scheduling slack), and
    that the ceilings grow and then stay at the cap; it cannot check a lower bound.

    Sign-ups flowing at the same time are not held back by the failing subscribers.
    """
    workers.wait_ready(
        workers.spawn("failing-subs", queues.ANALYTICS, queues.DEAD_LETTER),
        workers.spawn("failing-mail", queues.NOTIFICATIONS, concurrency=1),
    )
    permanent, transient = probe_wire("permanent"), probe_wire("transient")

    # when
    send_probe(PERMANENT, permanent, queues.ANALYTICS)
    send_probe(TRANSIENT, transient, queues.ANALYTICS)
    assert [r.status_code for r in sign_up_many(SIGNUPS, Client())] == [302] * SIGNUPS

    # then: a permanent failure, dead-lettered after one attempt
    wait_for(lambda: DeadLetter.objects.filter(subscriber=PERMANENT).exists(), timeout=30, what="permanent letter")
    letter = DeadLetter.objects.get(subscriber=PERMANENT)
    assert (letter.kind, letter.attempts) == ("permanent", 1)
    assert "PermanentError" in letter.exception_type and "550" in letter.exception_message
    assert len(attempts(PERMANENT, permanent["id"])) == 1
    assert PERMANENT not in counters.read(counters.RETRIES)

    # and: a transient failure, dead-lettered after exactly max_retries retries
    wait_for(lambda: DeadLetter.objects.filter(subscriber=TRANSIENT).exists(), timeout=30, what="transient letter")
    letter = DeadLetter.objects.get(subscriber=TRANSIENT)
    times = attempts(TRANSIENT, transient["id"])
    assert (letter.kind, letter.attempts, len(times)) == ("retries_exhausted", 5, 5)
    assert "ProviderHiccup" in letter.exception_type
    assert counters.read(counters.RETRIES)[TRANSIENT] == TRANSIENT_MAX_RETRIES

    # and: each wait stayed under its ceiling; the ceilings grew, then met the cap
    ceilings = [POLICY.ceiling(n) for n in range(TRANSIENT_MAX_RETRIES)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    print("gap / ceiling: " + ", ".join(f"{g:.2f}/{c:.2f}" for g, c in zip(gaps, ceilings, strict=True)))
    assert ceilings == [0.25, 0.5, 1.0, 1.0]
    for n, (gap, ceiling) in enumerate(zip(gaps, ceilings, strict=True)):
        assert gap <= ceiling + SLACK, f"retry {n + 1} came {gap:.2f}s after the attempt before (ceiling {ceiling})"

    wait_until_delivered(sink, timeout=30)
    check_invariant(
        sink,
        "failing subscribers",
        committed=SIGNUPS,
        expected_dead_letters=2,
        dead_letters=lambda d: d.subscriber in (PERMANENT, TRANSIENT),
    )
