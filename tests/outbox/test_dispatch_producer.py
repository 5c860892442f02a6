"""The producer a dispatch borrows from Celery's pool goes back to it.

``dispatch.send_many`` takes its producer with Celery's ``app.producer_or_acquire()``
and gives it back when the ``with`` ends: a producer kept would exhaust the
pool after ``broker_pool_limit`` requests and hang the next.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from eventbus.contract.envelope import Envelope
from eventbus.outbox.fanout import send_many
from eventbus.outbox.publish import publish
from project import queues
from project.celery import app as celery_app
from signups.events import UserSignedUp
from tests.conftest import queue_length

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.usefixtures("broker")]


def _wire(user_id: int) -> dict[str, object]:
    with transaction.atomic():
        envelope: Envelope = publish(UserSignedUp(user_id=user_id, channel="web"), aggregate=f"user:{user_id}")
    return envelope.to_dict()


def test_every_dispatch_gives_its_producer_back() -> None:
    pool = celery_app.producer_pool
    before = queue_length(queues.NOTIFICATIONS)
    # More dispatches than the pool holds producers: a producer kept would exhaust it.
    for user_id in range(1, pool.limit * 2 + 2):
        send_many([_wire(user_id)])
    # kombu's record of the producers lent out and not yet given back.
    assert len(pool._dirty) == 0
    # Each event went out twice (on commit, then by send_many), one message each time.
    assert queue_length(queues.NOTIFICATIONS) - before == (pool.limit * 2 + 1) * 2
