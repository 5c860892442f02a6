"""A delivery's Redis bookkeeping: one shared round trip before the effect and one after
(eventbus/fastpath/bookkeeping.py, eventbus/delivery/pipeline.py), against a real Redis."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from django.db import OperationalError

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.delivery import pipeline
from eventbus.delivery.guards import Batch, Delivery, attempts, effectlock
from eventbus.delivery.verdict import ENDED, GO, Action, fail
from eventbus.fastpath import bookkeeping
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.observability import counters, latency
from eventbus.observability.counters import DELIVERED
from eventbus.protection.breaker import OPEN, CircuitBreaker
from eventbus.protection.windowlimit import WindowLimiter
from eventbus.redis import client, key

EMAIL = "notifications.send_welcome_email"


class CountedCommands:
    """How many times redis-py sent something to the server (a command, or a pipeline at once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client().ping()  # an open connection first: its handshake is not what is counted
        self.round_trips = 0
        connection_class = client().connection_pool.connection_class
        real = connection_class.send_packed_command

        def counted(connection: Any, *args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            return real(connection, *args, **kwargs)

        monkeypatch.setattr(connection_class, "send_packed_command", counted)


def delivery(
    task_id: str,
    retries: int = 0,
    *,
    event_id: uuid.UUID | None = None,
    limiter: WindowLimiter | None = None,
    breaker: CircuitBreaker | None = None,
) -> Delivery:
    """A delivery to the welcome email (an effect outside the database: it takes the effect lock)."""
    subscription = dataclasses.replace(
        registry.get(EMAIL),
        limiter=(lambda: limiter) if limiter is not None else None,
        breaker=(lambda: breaker) if breaker is not None else None,
        time_limit=30.0,
    )
    event = Envelope(
        id=event_id or uuid.uuid4(),
        type="signups.user_signed_up",
        version=1,
        occurred_at=datetime.now(UTC),
        aggregate="user:1",
        sequence=1,
        correlation_id="c",
        causation_id=None,
        payload=None,
    )
    return Delivery(subscription, event, {}, task_id, retries)


def one(item: Delivery) -> Batch:
    return Batch(item.subscription, [item])


def test_a_round_trip_hands_each_guard_back_only_its_own_replies(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = CountedCommands(monkeypatch)
    round_trip = RoundTrip()

    first = round_trip.queue(lambda pipe: (pipe.incr(key("a")), pipe.incr(key("a"))))
    second = round_trip.queue(lambda pipe: pipe.set(key("b"), "x", nx=True))
    third = round_trip.queue(lambda pipe: pipe.get(key("b")))
    round_trip.send()

    assert counted.round_trips == 1
    assert (first.values, second.values, third.first) == ([1, 2], [True], "x")


def test_a_round_trip_raises_the_first_error_and_is_required_only_when_a_guard_says_so(redis_prefix: str) -> None:
    client().set(key("text"), "not a number")
    best_effort = RoundTrip()
    reply = best_effort.queue(lambda pipe: pipe.incr(key("text")))
    assert not best_effort.required

    with pytest.raises(redis.ResponseError):
        best_effort.send()
    assert not reply.received
    needed = RoundTrip()
    needed.queue(lambda pipe: pipe.ping(), required=True)
    assert needed.required


def test_the_checks_before_an_email_count_take_the_lock_the_token_and_read_the_breaker_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    limiter = WindowLimiter("admit-test", limit=2, period=60.0)
    breaker = CircuitBreaker("admit-test", 3, 60.0)
    client().script_load(limiter.acquire_call()[0].script)
    event_id = uuid.uuid4()
    first = delivery("task-1", event_id=event_id, limiter=limiter, breaker=breaker)
    counted = CountedCommands(monkeypatch)

    assert pipeline.check(one(first)) == [GO]

    assert counted.round_trips == 1
    assert client().get(key("deliveries", "task-1", "0")) == "1"
    lock = effectlock.lock_key(EMAIL, event_id)
    assert first.lock_token is not None and client().get(lock) == first.lock_token
    assert 29_000 < client().pttl(lock) <= 30_000
    assert limiter.grants_in_window() == 1

    # a second delivery of the same event at the same moment: counted, no lock for it, it waits
    second = delivery("task-1", event_id=event_id, limiter=limiter, breaker=breaker)
    (verdict,) = pipeline.check(one(second))
    assert (verdict.action, verdict.counter) == (Action.WAIT, counters.EFFECT_WAITS)
    assert second.lock_token is None and client().get(lock) == first.lock_token
    assert client().get(key("deliveries", "task-1", "0")) == "2"

    # the window full: a wait for the token
    (verdict,) = pipeline.check(one(delivery("task-3", limiter=limiter, breaker=breaker)))
    assert (verdict.action, verdict.counter) == (Action.WAIT, counters.RATE_LIMIT_WAITS)
    assert 59.0 < verdict.countdown <= 120.0
    assert limiter.grants_in_window() == 2


def test_a_delivery_started_too_often_is_dead_lettered_by_the_checks(redis_prefix: str, settings: Any, db: Any) -> None:
    settings.EVENTBUS_MAX_DELIVERIES = 1
    pipeline.check(one(delivery("task-lost")))

    (verdict,) = pipeline.check(one(delivery("task-lost")))

    assert verdict.action is Action.DEAD_LETTER
    assert "died each time" in str(verdict.error)


def test_the_checks_only_read_a_breaker_that_is_not_closed_and_its_own_check_makes_one_probe(
    redis_prefix: str, db: Any
) -> None:
    # given: an open breaker whose reset timeout has passed (the next before_call would probe)
    breaker = CircuitBreaker("admit-open", 1, 0.05)
    breaker.record_failure()
    time.sleep(0.1)

    (probe,) = pipeline.check(one(delivery("task-d", breaker=breaker)))
    (other,) = pipeline.check(one(delivery("task-e", breaker=breaker)))

    assert probe is GO
    assert (other.action, other.counter) == (Action.WAIT, counters.BREAKER_WAITS)


def test_the_checks_load_the_limiters_script_again_when_the_server_forgot_it(redis_prefix: str, db: Any) -> None:
    limiter = WindowLimiter("admit-noscript", limit=5, period=60.0)
    client().script_flush()

    assert pipeline.check(one(delivery("task-e", limiter=limiter))) == [GO]
    assert limiter.grants_in_window() == 1


def test_the_checks_raise_when_redis_is_out_of_reach_and_a_guard_needs_it_and_else_count_a_first_start(
    monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens there
    monkeypatch.setattr(bookkeeping, "client", lambda: unreachable)
    in_the_database = dataclasses.replace(registry.get("analytics.record_event"))
    only_counted = delivery("task-f")
    only_counted.subscription = in_the_database

    assert pipeline.check(one(only_counted)) == [GO]
    with pytest.raises(redis.RedisError):
        pipeline.check(one(delivery("task-f")))  # the effect lock
    with pytest.raises(redis.RedisError):
        pipeline.check(one(delivery("task-f", breaker=CircuitBreaker("admit-down", 1, 1.0))))


def test_finish_releases_the_lock_closes_the_breaker_clears_and_counts_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    # given: a delivery that began, failed once, and holds the lock; an open breaker
    breaker = CircuitBreaker("bookkeeping-test", 1, 60.0)
    done = delivery("task-3", 1, breaker=breaker)
    pipeline.check(one(done))
    attempts.failed("task-3")
    breaker.record_failure()
    assert breaker.state().state == OPEN
    lock = effectlock.lock_key(EMAIL, done.event.id)
    # the scripts loaded, as after a worker's first delivery (a server that lost them costs one
    # more round trip: the next test); another test may have flushed them from the shared server
    for script in (effectlock.release_script(), breaker.success_call()[0]):
        client().script_load(script.script)
    counted = CountedCommands(monkeypatch)

    # when
    pipeline.finish(one(done), GO)

    # then: everything in one round trip
    assert counted.round_trips == 1
    assert client().get(lock) is None
    assert breaker.state().state == "closed"
    assert attempts.first_failure("task-3") is None
    assert client().get(key("deliveries", "task-3", "1")) is None
    assert client().hget(key("counters", DELIVERED), EMAIL) == "1"
    assert latency.histogram(EMAIL).count == 1


def test_finish_without_an_effect_only_gives_the_lock_back(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    waited = delivery("task-w")
    pipeline.check(one(waited))
    counted = CountedCommands(monkeypatch)

    pipeline.finish(one(waited), ENDED)

    assert counted.round_trips == 1
    assert client().get(effectlock.lock_key(EMAIL, waited.event.id)) is None
    assert client().get(key("deliveries", "task-w", "0")) == "1"  # the outcome ends the attempt
    assert client().hget(key("counters", DELIVERED), EMAIL) is None


def test_finish_leaves_a_lock_that_is_no_longer_its_own(redis_prefix: str, db: Any) -> None:
    late = delivery("task-4")
    pipeline.check(one(late))
    # the lock expired and another delivery took it
    client().set(effectlock.lock_key(EMAIL, late.event.id), "someone-else")

    pipeline.finish(one(late), GO)

    assert client().get(effectlock.lock_key(EMAIL, late.event.id)) == "someone-else"


def test_finish_loads_its_scripts_again_when_the_server_forgot_them(redis_prefix: str, db: Any) -> None:
    # given: a server without the scripts (restarted or emptied since they were loaded)
    breaker = CircuitBreaker("bookkeeping-noscript", 1, 60.0)
    done = delivery("task-5", breaker=breaker)
    pipeline.check(one(done))
    breaker.record_failure()
    # SCRIPT FLUSH empties only the server's script cache; every redis-py client
    # (this one, other tests') loads a script again when the server answers NOSCRIPT.
    client().script_flush()

    # when
    pipeline.finish(one(done), GO)

    # then: the release and the breaker's success were still done
    assert client().get(effectlock.lock_key(EMAIL, done.event.id)) is None
    assert breaker.state().state == "closed"


def test_finish_of_a_batch_ends_every_attempt_and_counts_the_batch_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    # given: a batch of three deliveries that began
    analytics = registry.get("analytics.record_event")
    items = [delivery("batch-task-1"), delivery("batch-task-2", 1), delivery("batch-task-3")]
    for item in items:
        item.subscription = analytics
    batch = Batch(analytics, items, bulk=True)
    pipeline.check(batch)
    counted = CountedCommands(monkeypatch)

    # when
    pipeline.finish(batch, GO)

    # then: one round trip for the latencies, the counts and the end of every attempt
    assert counted.round_trips == 1
    assert counters.read(counters.BATCHES)[analytics.name] == 1
    assert counters.read(counters.BATCHED)[analytics.name] == 3
    assert counters.read(counters.DELIVERED)[analytics.name] == 3
    assert latency.histogram(analytics.name).count == 3
    for item in items:
        assert client().get(key("deliveries", item.task_id, str(item.retries))) is None


@pytest.mark.parametrize("database_failed", [True, False], ids=["the-database", "the-provider"])
def test_a_failure_of_the_database_does_not_count_against_the_providers_breaker(
    database_failed: bool, redis_prefix: str, db: Any
) -> None:
    # given: a breaker that opens at the first failure
    breaker = CircuitBreaker("database-not-provider", 1, 60.0)
    failing = delivery("task-db", breaker=breaker)
    pipeline.check(one(failing))
    error: Exception = TimeoutError("the provider took too long")
    if database_failed:
        error = pipeline.LedgerNotWritten("the effect happened, its ledger entry was not written")
        error.__cause__ = OperationalError("server closed the connection unexpectedly")

    # when: the delivery fails, transient (the provider too slow, or the database gone before the ledger entry)
    pipeline.finish(one(failing), fail(error, transient=True))

    # then: the provider's breaker counts only the provider's failures
    assert breaker.state().state == ("closed" if database_failed else OPEN)
