"""The consumer base task with a real worker: retries, dead letters, waiting, shedding, ordering."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.contract import registry
from eventbus.contract.errors import PermanentError
from eventbus.contract.retry import RetryPolicy
from eventbus.contract.subscriber import subscriber
from eventbus.delivery.guards import attempts
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.models import DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.operations.checks import problems
from eventbus.outbox.fanout import send_many
from eventbus.outbox.publish import publish
from eventbus.outbox.relay import relay
from eventbus.protection.breaker import CircuitBreaker
from notifications.provider import email_breaker
from project import queues
from project.celery import app as celery_app
from signups.events import UserEmailVerified, UserSignedUp
from tests.conftest import purge_broker, queue_length, running_worker, wait_for
from tests.factories import sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


class Flaky(Exception):
    """A transient failure of a test subscriber."""


@pytest.fixture
def declare() -> Iterator[Callable[..., Any]]:
    """Declare test subscribers; they are removed afterwards."""
    names: list[str] = []

    def _declare(*event_types: str, name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        names.append(name)
        options.setdefault("queue", queues.ANALYTICS)
        options.setdefault("label", name)
        return subscriber(*event_types, name=name, **options)

    yield _declare
    for name in names:
        registry.unregister(name)
        celery_app.tasks.pop(name, None)


def workers() -> Any:
    """A worker on every queue a test needs. Start it after declaring test subscribers:
    a worker knows the tasks registered when it started."""
    return running_worker(queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER, concurrency=4)


@pytest.fixture
def all_queues(broker: None, smtp_sink: SmtpSink) -> None:
    """A clean broker and an SMTP sink; tests start their workers with ``workers()``."""


def wire_for(payload: object, aggregate: str) -> dict[str, Any]:
    return OutboxEvent.objects.get(id=publish(payload, aggregate=aggregate).id).to_wire()


def test_a_permanent_failure_is_dead_lettered_after_zero_retries(declare: Callable[..., Any], all_queues: Any) -> None:
    attempts: list[float] = []

    @declare("user.signed_up", name="tests.always_refused", retry=RetryPolicy(transient=(Flaky,), max_retries=5))
    def refused(event: Any) -> None:
        attempts.append(time.monotonic())
        raise PermanentError("the provider said 550: no such mailbox")

    with workers():
        publish(UserSignedUp(user_id=1, channel="web"), aggregate="user:1")
        letter = wait_for(
            lambda: DeadLetter.objects.filter(subscriber="tests.always_refused").first(), what="dead letter"
        )
    assert letter.kind == "permanent"
    assert letter.attempts == 1
    assert "550: no such mailbox" in letter.exception_message
    assert "PermanentError" in letter.exception_type
    assert "raise PermanentError" in letter.traceback
    assert letter.queue == queues.ANALYTICS
    assert len(attempts) == 1
    assert not ProcessedEvent.objects.filter(subscriber="tests.always_refused").exists()


def test_a_transient_failure_is_retried_exactly_as_configured_then_dead_lettered(
    declare: Callable[..., Any], all_queues: Any
) -> None:
    attempts: list[float] = []
    policy = RetryPolicy(transient=(Flaky,), max_retries=3, base_delay=0.1, max_delay=0.3)

    @declare("user.signed_up", name="tests.always_flaky", retry=policy)
    def flaky(event: Any) -> None:
        attempts.append(time.monotonic())
        raise Flaky("try later")

    with workers():
        publish(UserSignedUp(user_id=2, channel="web"), aggregate="user:2")
        letter = wait_for(
            lambda: DeadLetter.objects.filter(subscriber="tests.always_flaky").first(), what="dead letter"
        )
    assert letter.kind == "retries_exhausted"
    assert len(attempts) == 4  # the first try and three retries
    assert letter.attempts == 4
    assert letter.first_failed_at <= letter.last_failed_at
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Each wait is drawn from [0, ceiling], the ceilings double, and all stay under the cap
    # (plus scheduling slack of a loaded test machine).
    assert [policy.ceiling(n) for n in range(3)] == [0.1, 0.2, 0.3]
    for n, gap in enumerate(gaps):
        assert gap <= policy.ceiling(n) + 1.0, (n, gap)


def test_a_transient_failure_that_recovers_has_its_effect_once(declare: Callable[..., Any], all_queues: Any) -> None:
    calls: list[int] = []

    @declare("user.signed_up", name="tests.second_time_lucky", retry=RetryPolicy(transient=(Flaky,), base_delay=0.05))
    def lucky(event: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Flaky("not yet")

    with workers():
        publish(UserSignedUp(user_id=3, channel="web"), aggregate="user:3")
        wait_for(lambda: ProcessedEvent.objects.filter(subscriber="tests.second_time_lucky").exists(), what="effect")
    assert len(calls) == 2
    assert not DeadLetter.objects.filter(subscriber="tests.second_time_lucky").exists()
    assert counters.read(counters.RETRIES).get("tests.second_time_lucky") == 1


def test_a_broken_envelope_is_poison_and_the_worker_keeps_serving(all_queues: Any, client: Client) -> None:
    task = registry.get("analytics.record_event").task
    broken = {"id": str(uuid.uuid4()), "type": "user.signed_up", "version": 99}

    with workers():
        task.apply_async(args=(broken,), queue=queues.ANALYTICS)
        letter = wait_for(lambda: DeadLetter.objects.filter(kind="poison").first(), what="poison dead letter")
        sign_up_via_client(client)
        wait_for(lambda: AnalyticsEvent.objects.exists(), what="the next event still processed")

    assert "lacks fields" in letter.exception_message
    assert letter.body == broken


def test_a_delivery_counted_max_deliveries_starts_is_dead_lettered_as_worker_lost(
    all_queues: Any, settings: Any
) -> None:
    """The guard alone, its count written by hand: the delivery count of a task already at the limit
    dead-letters the next start instead of running it. A task that really kills its worker
    process each time: tests/faults/test_a_task_that_kills_its_worker.py."""
    # given: this delivery's count says it already started (and never ended) as often as allowed
    settings.EVENTBUS_MAX_DELIVERIES = 2
    wire = wire_for(UserSignedUp(user_id=4, channel="web"), "user:4")
    purge_broker()
    task_id = str(uuid.uuid4())
    for _ in range(2):
        counting = RoundTrip()
        counting.queue(lambda pipe: attempts.count_into(pipe, task_id, 0))
        counting.send()

    # when: it is delivered once more
    with workers():
        registry.get("analytics.record_event").task.apply_async(args=(wire,), task_id=task_id, queue=queues.ANALYTICS)
        letter = wait_for(lambda: DeadLetter.objects.filter(kind="worker_lost").first(), what="worker_lost letter")

    # then
    assert letter.task_id == task_id
    assert "died each time" in letter.exception_message
    assert not AnalyticsEvent.objects.exists()


def test_an_open_breaker_reschedules_email_without_touching_the_provider(
    all_queues: Any, smtp_sink: SmtpSink, client: Client, settings: Any
) -> None:
    settings.EMAIL_BREAKER_RESET_TIMEOUT = 1.5
    breaker = email_breaker()
    for _ in range(settings.EMAIL_BREAKER_FAILURE_THRESHOLD):
        breaker.record_failure()
    assert breaker.state().state == "open"
    connections_before = smtp_sink.connections

    with workers():
        sign_up_via_client(client)
        wait_for(lambda: counters.read(counters.BREAKER_WAITS).get("notifications.send_welcome_email"), what="a wait")
        assert smtp_sink.connections == connections_before
        assert not smtp_sink.messages

        # then: after the reset time one probe goes through and closes it
        wait_for(lambda: smtp_sink.messages, timeout=20, what="the probe's email")
    assert email_breaker().state().state == "closed"
    assert counters.read(counters.RETRIES).get("notifications.send_welcome_email") is None


def test_backpressure_sheds_analytics_and_defers_email_until_the_queue_drains(
    broker: None, smtp_sink: SmtpSink, client: Client, settings: Any
) -> None:
    # given: both queues at their high-water mark (nobody consumes yet)
    settings.EVENTBUS_HIGH_WATER_MARK = 2
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 0
    filler = wire_for(UserSignedUp(user_id=900, channel="web"), "user:900")
    send_many([filler, filler])
    assert queue_length(queues.ANALYTICS) == 2

    # when
    response = sign_up_via_client(client)

    # then: the sign-up is not slowed or failed; analytics shed, email held in the outbox
    assert response.status_code == 302
    event = OutboxEvent.objects.exclude(aggregate="user:900").get()
    assert event.status == OutboxEvent.Status.DEFERRED
    assert event.deferred_subscribers == ["notifications.send_welcome_email"]
    shed = ProcessedEvent.objects.get(event_id=event.id)
    assert (shed.subscriber, shed.outcome) == ("analytics.record_event", "shed")
    assert counters.read(counters.SHED) == {"analytics.record_event": 1}
    assert counters.read(counters.DEFERRED) == {"notifications.send_welcome_email": 1}
    # each step names its own subscriber's queue
    steps = dict(DeliveryStep.objects.filter(event_id=event.id).values_list("step", "detail"))
    assert "queue analytics" in steps["shed"] and "queue notifications" in steps["deferred"], steps
    assert relay(grace=0).deferred == 1  # still full: stays deferred

    # when: the queues drain
    purge_broker()
    result = relay(grace=0)

    # then: the email goes out, once
    assert result.dispatched == 1
    with running_worker(queues.NOTIFICATIONS):
        wait_for(lambda: smtp_sink.messages, what="the deferred email")
    event.refresh_from_db()
    assert event.status == OutboxEvent.Status.DISPATCHED
    assert len(smtp_sink.messages) == 1


def test_an_ordered_subscriber_defers_a_gap_and_ignores_a_stale_event(broker: None, settings: Any) -> None:
    settings.EVENTBUS_ORDERING_RECHECK = 0.1
    signed_up = wire_for(UserSignedUp(user_id=5, channel="web"), "user:5")
    verified = wire_for(UserEmailVerified(user_id=5), "user:5")
    purge_broker()
    analytics = registry.get("analytics.record_event").task

    with running_worker(queues.ANALYTICS):
        # when: the verification arrives first
        analytics.apply_async(args=(verified,), queue=queues.ANALYTICS)
        wait_for(lambda: counters.read(counters.ORDER_WAITS).get("analytics.record_event"), what="a deferral")
        assert not AnalyticsEvent.objects.exists()

        # then: once the sign-up arrives, both are recorded, in order
        analytics.apply_async(args=(signed_up,), queue=queues.ANALYTICS)
        wait_for(lambda: AnalyticsEvent.objects.count() == 2, what="both recorded")
        first, second = ProcessedEvent.objects.order_by("processed_at", "sequence")
        assert (first.sequence, second.sequence) == (1, 2)

        # and an old event delivered again after a newer one is ignored and counted
        ProcessedEvent.objects.filter(event_id=signed_up["id"]).delete()
        analytics.apply_async(args=(signed_up,), queue=queues.ANALYTICS)
        wait_for(lambda: counters.read(counters.STALE).get("analytics.record_event"), what="stale count")
    assert AnalyticsEvent.objects.count() == 2


def test_unsafe_settings_are_named(settings: Any) -> None:
    conf = celery_app.conf
    assert problems(conf) == []
    original = (conf.accept_content, conf.task_reject_on_worker_lost, conf.task_acks_on_timeout)
    try:
        conf.accept_content = ["json", "pickle"]
        conf.task_reject_on_worker_lost = False
        conf.task_acks_on_timeout = True
        found = problems(conf)
    finally:
        conf.accept_content, conf.task_reject_on_worker_lost, conf.task_acks_on_timeout = original
    assert any("pickle" in p for p in found)
    assert any("REJECT_ON_WORKER_LOST" in p for p in found)
    assert any("ACKS_ON_TIMEOUT" in p for p in found)


def test_breaker_state_is_shared_by_name() -> None:
    one = CircuitBreaker("tests-shared", 1, 5)
    one.record_failure()
    assert CircuitBreaker("tests-shared", 1, 5).before_call() is not None


def test_a_retry_the_broker_will_not_take_puts_the_message_back_instead_of_losing_it(
    declare: Callable[..., Any], all_queues: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a handler that fails once, and a broker that refuses the retry's publish once
    calls: list[int] = []

    @declare("user.signed_up", name="tests.retry_refused", retry=RetryPolicy(transient=(Flaky,), base_delay=0.05))
    def flaky_once(event: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Flaky("not yet")

    from celery.canvas import Signature

    real_apply_async = Signature.apply_async
    refusals: list[int] = []

    def refuse_once(self: Signature, *args: Any, **kwargs: Any) -> Any:
        if self.task == "tests.retry_refused" and not refusals:
            refusals.append(1)
            raise ConnectionError("the broker refused the retry's publish")
        return real_apply_async(self, *args, **kwargs)

    monkeypatch.setattr(Signature, "apply_async", refuse_once)

    # when
    with workers():
        publish(UserSignedUp(user_id=6, channel="web"), aggregate="user:6")
        wait_for(lambda: ProcessedEvent.objects.filter(subscriber="tests.retry_refused").exists(), what="effect")

    # then: the message went back to its queue and ran again (not a second retry: one retry
    # was counted, for the first failure), and the effect happened once
    assert refusals == [1]
    assert len(calls) == 2
    assert counters.read(counters.RETRIES).get("tests.retry_refused") == 1
    assert not DeadLetter.objects.filter(subscriber="tests.retry_refused").exists()
