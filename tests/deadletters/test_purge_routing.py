"""The dead-letter purge goes to a queue a worker pool consumes, and a worker there performs it.

A route to a queue no worker consumes would leave retention silently undone:
the messages would pile up and no dead letter would ever be deleted.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings

from eventbus.models import DeadLetter
from project import queues
from project.celery import app as celery_app
from tests.conftest import running_worker, wait_for
from tests.deadletters.test_deadletters import dead_letter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

PURGE = "eventbus.purge_dead_letters"


def test_the_purge_is_routed_to_a_queue_with_a_worker_pool() -> None:
    # The router (a purge sent by hand or by code) and beat's entry (the hourly run) name the same queue.
    routed = celery_app.amqp.router.route({}, PURGE)["queue"].name
    scheduled = settings.CELERY_BEAT_SCHEDULE[PURGE]["options"]["queue"]
    assert routed == scheduled
    assert routed in queues.WORKER_QUEUES


@override_settings(EVENTBUS_DEADLETTER_RETENTION_DAYS=30)
def test_a_worker_on_the_purge_queue_performs_the_purge_beat_sends(broker: None) -> None:
    # given: one dead letter past retention, one within it
    expired = dead_letter(age=timedelta(days=31))
    kept = dead_letter(age=timedelta(days=29), task_id="kept")
    entry = settings.CELERY_BEAT_SCHEDULE[PURGE]

    # when: the purge is sent as beat sends it, and a worker consumes only that entry's queue
    with running_worker(entry["options"]["queue"], concurrency=1):
        celery_app.send_task(entry["task"], **entry["options"])

        # then: the worker deleted what was past retention, and nothing else
        wait_for(lambda: not DeadLetter.objects.filter(pk=expired.pk).exists(), what="the expired dead letter purged")
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [kept.pk]
