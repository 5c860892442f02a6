"""Every event delivered more than once: the effect still happens once, and the duplicates are counted."""

from __future__ import annotations

import pytest
from django.test import Client

from devinbox.sink import SmtpSink
from eventbus.models import OutboxEvent
from eventbus.observability import counters
from eventbus.outbox.fanout import send_many
from eventbus.outbox.relay import relay
from project import queues
from tests.conftest import wait_for
from tests.faults.harness import ANALYTICS, WELCOME, sign_up_many, wait_until_delivered
from tests.faults.invariants import check_invariant
from tests.faults.processes import Workers

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SIGNUPS = 30


def test_each_event_delivered_three_times_has_one_effect_and_two_counted_duplicates(
    workers: Workers, sink: SmtpSink
) -> None:
    """Three copies of every event reach each subscriber: the on-commit dispatch, a second
    publish of the same wire right after it (two workers compete for the copies; whether a
    pair overlaps is left to chance here), and a relay of rows that look undispatched (a
    relay that died after sending, before marking). The ledger lets one through per
    (event, subscriber). Copies proven to overlap, and what keeps them apart then (the
    effect lock, the unique indexes), are in test_concurrent_duplicates.py."""
    # given: two workers competing on both queues
    both = (queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER)
    workers.wait_ready(workers.spawn("dup-a", *both), workers.spawn("dup-b", *both))

    # when: sign-ups are dispatched on commit, and each wire is published again at once
    client = Client()
    responses = sign_up_many(SIGNUPS, client)
    assert [r.status_code for r in responses] == [302] * SIGNUPS
    rows = list(OutboxEvent.objects.filter(type="user.signed_up"))
    again = send_many([row.to_wire() for row in rows])
    assert all(sorted(o.sent) == sorted([ANALYTICS, WELCOME]) for o in again)
    wait_until_delivered(sink, timeout=60)

    # and: every row is relayed once more, as if its dispatch had never been marked
    OutboxEvent.objects.update(status=OutboxEvent.Status.PENDING, dispatched_at=None)
    assert relay(grace=0).dispatched == SIGNUPS

    # then: two duplicates per event and subscriber were skipped, none had an effect
    expected = {WELCOME: 2 * SIGNUPS, ANALYTICS: 2 * SIGNUPS}
    wait_for(lambda: counters.read(counters.DUPLICATES) == expected, timeout=60, what=f"duplicates {expected}")
    print(f"duplicates counter: {counters.read(counters.DUPLICATES)}")
    check_invariant(sink, "duplicates", committed=SIGNUPS)
