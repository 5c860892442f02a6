"""Redis (the limits' store and the broker) hangs instead of refusing, during sign-ups and telemetry posts.

Two hangs: a ``redis-server`` of the test's own paused with ``CLIENT PAUSE ...
ALL`` (connections accepted, every command held), and a listener that accepts
and never answers. Every request answers within its bound (tests/faults/hangs.py
``request_bound``); after the first one timed out, the next does not wait at
all (the fail-fast gate, eventbus/protection/failfast.py); after the gate's window a
request asks again. Nothing is lost: the events wait in the outbox, the relay
sends them once Redis answers, and each subscriber's effect happens once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from analytics.models import AnalyticsEvent
from eventbus.contract import registry
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.outbox.relay import relay, waiting_count
from eventbus.protection import failfast
from project import queues
from signups.services import aggregate_of
from telemetry.models import Reading, Rollup
from tests.brokers import using_broker
from tests.conftest import queue_length, running_worker, wait_for
from tests.factories import sign_up_via_client
from tests.faults.hangs import (
    ReplySwallowingProxy,
    SilentListener,
    no_wait_margin,
    pause,
    request_bound,
    timed,
    wait_until_answering,
)
from tests.faults.processes import PrivateRedis
from tests.telemetry.helpers import URL, batch, device, headers

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HANGS = ["paused", "silent"]

# The gate's window, shorter than the default so that the test waits less; the behaviour is the same.
FAILFAST_SECONDS = 1.0


@pytest.fixture(autouse=True)
def _short_failfast_window(settings: Any) -> None:
    settings.EVENTBUS_FAILFAST_SECONDS = FAILFAST_SECONDS


@contextmanager
def hanging(kind: str, private_redis: PrivateRedis) -> Iterator[SilentListener | None]:
    """Inside the block, Redis and the broker hang; afterwards they answer (the test's private Redis)."""
    if kind == "paused":
        # Long enough for the three requests and the window between; CLIENT PAUSE ends on its own.
        held_for = 2 * request_bound() + FAILFAST_SECONDS + 5.0
        pause(private_redis.url, held_for)
        yield None
        wait_until_answering(private_redis.url, timeout=held_for + 30)
        return
    with SilentListener() as listener, override_settings(REDIS_URL=listener.url), using_broker(listener.url):
        yield listener


def signed_up_row(email: str) -> OutboxEvent:
    user = get_user_model().objects.get(email=email)
    return OutboxEvent.objects.get(type="user.signed_up", aggregate=aggregate_of(user.pk))


def relay_everything() -> None:
    def relayed() -> bool:
        relay(grace=0)
        return waiting_count() == 0

    wait_for(relayed, timeout=30, interval=0.5, what="the outbox relayed")


@pytest.mark.parametrize("kind", HANGS)
def test_signups_while_redis_hangs_answer_within_the_bound_and_lose_nothing(
    kind: str, private_redis: PrivateRedis, smtp_sink: Any
) -> None:
    client = Client()
    emails = [f"hang-{kind}-{n}@example.com" for n in range(4)]

    # given: a sign-up while Redis answers
    assert sign_up_via_client(client, emails[0]).status_code == 302

    with hanging(kind, private_redis) as listener:
        # when: a sign-up while Redis hangs
        first, took_first = timed(lambda: sign_up_via_client(client, emails[1]))
        asked = listener.accepted if listener else 0

        # then: it answers within the bound, and both gates are open
        assert first.status_code == 302
        assert took_first <= request_bound(), f"a sign-up took {took_first:.2f}s while Redis hung"
        assert failfast.REDIS.is_open() and failfast.BROKER.is_open()

        # when: the next sign-up comes at once
        second, took_second = timed(lambda: sign_up_via_client(client, emails[2]))

        # then: it asked nobody and waited for nothing
        assert second.status_code == 302
        assert took_second < no_wait_margin(), f"the sign-up after a timeout took {took_second:.2f}s"
        if listener is not None:
            assert listener.accepted == asked > 0

        # when: the gates' window has passed
        wait_for(lambda: not failfast.BROKER.is_open(), timeout=FAILFAST_SECONDS + 5, what="the window to pass")
        third, took_third = timed(lambda: sign_up_via_client(client, emails[3]))

        # then: that sign-up asked again, within the bound
        assert third.status_code == 302
        assert took_third <= request_bound(), f"a sign-up took {took_third:.2f}s while Redis hung"
        if listener is not None:
            assert listener.accepted > asked

    # and: the first and third sign-ups' events met the broker's failure, the second's the gate
    rows = [signed_up_row(email) for email in emails[1:]]
    assert rows[0].status == OutboxEvent.Status.PENDING and not rows[0].last_error.startswith("Unavailable")
    assert rows[1].status == OutboxEvent.Status.PENDING and rows[1].last_error.startswith("Unavailable")
    # (A pause may have ended just before the third: then it was sent at once, which is asking too.)
    assert rows[2].status == OutboxEvent.Status.DISPATCHED or not rows[2].last_error.startswith("Unavailable")

    # when: Redis answers again; the relay sends what waited; workers consume
    relay_everything()
    subscribers = [s.name for s in registry.subscriptions_for("user.signed_up")]
    events = [signed_up_row(email).id for email in emails]
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER):
        wait_for(
            lambda: ProcessedEvent.objects.filter(event_id__in=events).count() == len(events) * len(subscribers),
            timeout=60,
            what="every subscriber's effect of every sign-up",
        )

    # then: each effect once
    for event_id in events:
        assert sorted(ProcessedEvent.objects.filter(event_id=event_id).values_list("subscriber", flat=True)) == sorted(
            subscribers
        )
    welcomed = Counter(rcpt for message in smtp_sink.messages for rcpt in message.rcpt_tos)
    assert {email: welcomed[email] for email in emails} == dict.fromkeys(emails, 1)
    assert AnalyticsEvent.objects.filter(event_id__in=events).count() == len(events)


@pytest.mark.parametrize("kind", HANGS)
def test_telemetry_posts_while_redis_hangs_answer_within_the_bound_and_lose_nothing(
    kind: str, private_redis: PrivateRedis, live_server: Any
) -> None:
    _, token = device(f"hang-{kind}")

    def post(first: int) -> tuple[requests.Response, float]:
        payload = batch(first, 10)
        return timed(lambda: requests.post(live_server.url + URL, json=payload, headers=headers(token), timeout=30))

    # given: a batch while Redis answers
    assert post(1)[0].status_code == 202

    with hanging(kind, private_redis) as listener:
        # when: a batch while Redis hangs
        during, took = post(11)
        asked = listener.accepted if listener else 0

        # then: accepted within the bound; both gates open
        assert during.status_code == 202, during.text
        assert took <= request_bound(), f"a telemetry post took {took:.2f}s while Redis hung"
        assert failfast.REDIS.is_open() and failfast.BROKER.is_open()

        # when: the next batch comes at once
        after, took_after = post(21)

        # then: accepted without asking anybody
        assert after.status_code == 202, after.text
        assert took_after < no_wait_margin(), f"the post after a timeout took {took_after:.2f}s"
        if listener is not None:
            assert listener.accepted == asked > 0
    assert OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count() == 2

    # when: Redis answers again; the relay sends what waited; a worker rolls up
    relay_everything()
    with running_worker(queues.TELEMETRY, queues.DEAD_LETTER):
        wait_for(
            lambda: ProcessedEvent.objects.filter(subscriber="telemetry.rollup").count() == 3,
            timeout=60,
            what="the three batches rolled up",
        )

    # then: every reading once, in the table and in the rollups
    assert Reading.objects.count() == 30
    assert sum(Rollup.objects.values_list("count", flat=True)) == 30


def test_a_send_that_timed_out_after_redis_took_it_is_sent_again_and_its_effect_happens_once(
    private_redis: PrivateRedis, smtp_sink: Any, settings: Any
) -> None:
    """The ambiguous case: Redis applied the publish, but its reply was lost and the request timed
    out. The row stays pending, the relay sends the event again, the consumers' ledger skips the
    second message: a duplicate on the wire, one effect, never a loss."""
    # The depth read stays cached for the test, so that the publish is the command whose reply is lost.
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 600.0
    client = Client()
    with ReplySwallowingProxy(private_redis.port) as proxy, using_broker(proxy.url):
        # given: a sign-up through the proxy while replies pass (connections made, depths cached)
        assert sign_up_via_client(client, "before-ambiguous@example.com").status_code == 302
        waiting = queue_length(queues.NOTIFICATIONS)

        # when: replies are lost; a sign-up publishes
        proxy.swallow.set()
        response, took = timed(lambda: sign_up_via_client(client, "ambiguous@example.com"))

    # then: it answered within the bound; Redis holds its message, yet its row waits for the relay
    assert response.status_code == 302
    assert took <= request_bound(), f"a sign-up took {took:.2f}s while replies were lost"
    assert queue_length(queues.NOTIFICATIONS) == waiting + 1
    row = signed_up_row("ambiguous@example.com")
    assert row.status == OutboxEvent.Status.PENDING and row.last_error

    # when: the relay sends it again (a second message on the wire); workers consume both
    relay_everything()
    assert queue_length(queues.NOTIFICATIONS) == waiting + 2
    subscribers = [s.name for s in registry.subscriptions_for("user.signed_up")]
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER):
        wait_for(lambda: queue_length(queues.NOTIFICATIONS) == 0, timeout=60, what="both messages consumed")
        wait_for(
            lambda: ProcessedEvent.objects.filter(event_id=row.id).count() == len(subscribers),
            timeout=60,
            what="every subscriber's effect",
        )

    # then: one welcome email, one analytics row
    welcomed = Counter(rcpt for message in smtp_sink.messages for rcpt in message.rcpt_tos)
    assert welcomed["ambiguous@example.com"] == 1
    assert AnalyticsEvent.objects.filter(event_id=row.id).count() == 1
