"""Order checks of a batch (eventbus/delivery/ledger.py's ``history``, eventbus/delivery/guards/
ordering.py's ``in_order_many``): answers and queries."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.delivery import ledger
from eventbus.delivery.guards import ordering
from eventbus.models import OutboxEvent
from eventbus.outbox.publish import publish
from signups.events import UserEmailVerified, UserSignedUp

pytestmark = pytest.mark.django_db(transaction=True)

ANALYTICS = "analytics.record_event"


def published(*events: tuple[object, str]) -> list[Envelope]:
    """Events in the outbox (their dispatch held back), as envelopes a batch would carry."""
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit"), transaction.atomic():
        rows = [publish(payload, aggregate=aggregate) for payload, aggregate in events]
    return [Envelope.from_dict(OutboxEvent.objects.get(id=row.id).to_wire()) for row in rows]


def test_a_batch_of_first_events_is_checked_with_one_query_of_the_ledger_and_none_of_the_outbox() -> None:
    subscription = registry.get(ANALYTICS)
    events = published(*[(UserSignedUp(user_id=n, channel="web"), f"user:{n}") for n in range(1, 6)])

    with CaptureQueriesContext(connection) as queries:
        handled = ledger.history(events, subscription)
        in_order = ordering.in_order_many(events, subscription, handled)

    assert in_order == {event.id for event in events}
    assert len(queries.captured_queries) == 1
    assert "eventbus_outboxevent" not in queries.captured_queries[0]["sql"]


def test_the_ledger_rows_read_once_say_what_is_done_stale_or_waiting() -> None:
    subscription = registry.get(ANALYTICS)
    # user:1: sign-up recorded, its verification in order; user:2: sign-up not
    # recorded, its verification waits; user:3: a later event recorded, the
    # sign-up is stale; user:4: recorded already
    signup_1, verified_1, _signup_2, verified_2, signup_3, verified_3, signup_4 = published(
        (UserSignedUp(user_id=1, channel="web"), "user:1"),
        (UserEmailVerified(user_id=1), "user:1"),
        (UserSignedUp(user_id=2, channel="web"), "user:2"),
        (UserEmailVerified(user_id=2), "user:2"),
        (UserSignedUp(user_id=3, channel="web"), "user:3"),
        (UserEmailVerified(user_id=3), "user:3"),
        (UserSignedUp(user_id=4, channel="web"), "user:4"),
    )
    ledger.claim_many([(signup_1, "t1"), (verified_3, "t3"), (signup_4, "t4")], ANALYTICS)
    batch = [verified_1, verified_2, signup_3, signup_4]

    handled = ledger.history(batch, subscription)

    assert {event_id for event_id, _, _ in handled} >= {signup_4.id}
    assert ordering.in_order_many(batch, subscription, handled) == {verified_1.id, signup_4.id}
    # without the rows, the same answer from its own queries
    assert ordering.in_order_many(batch, subscription) == {verified_1.id, signup_4.id}
    # and each one alone, as the one-by-one path checks it
    assert [ordering.order_of(event, subscription) for event in batch] == [
        ordering.Order.IN_ORDER,
        ordering.Order.GAP,
        ordering.Order.STALE,
        ordering.Order.IN_ORDER,
    ]
