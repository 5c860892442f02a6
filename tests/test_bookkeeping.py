"""A delivery's Redis bookkeeping in two round trips (eventbus/fastpath/bookkeeping.py), against a real Redis."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from eventbus.delivery import attempts as deliveries
from eventbus.delivery import effectlock
from eventbus.fastpath import bookkeeping
from eventbus.observability import counters, latency
from eventbus.observability.counters import DELIVERED
from eventbus.protection.breaker import OPEN, CircuitBreaker
from eventbus.protection.windowlimit import WindowLimiter
from eventbus.redis import client, key


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


def test_begin_counts_the_start_and_takes_the_lock_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = uuid.uuid4()
    counted = CountedCommands(monkeypatch)

    first = bookkeeping.begin("task-1", 0, ("notifications.send_welcome_email", event_id, 30.0))

    assert counted.round_trips == 1
    assert first.starts == 1 and first.token is not None
    lock = effectlock.lock_key("notifications.send_welcome_email", event_id)
    assert client().get(lock) == first.token
    assert 29_000 < client().pttl(lock) <= 30_000

    # a second delivery of the same event at the same moment: counted, and no lock for it
    second = bookkeeping.begin("task-1", 0, ("notifications.send_welcome_email", event_id, 30.0))
    assert second.starts == 2 and second.token is None
    assert client().get(lock) == first.token


def test_begin_without_a_lock_is_best_effort_and_with_one_it_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens there
    monkeypatch.setattr(bookkeeping, "client", lambda: unreachable)

    assert bookkeeping.begin("task-2", 0) == bookkeeping.Begun(starts=1, token=None)
    with pytest.raises(redis.RedisError):
        bookkeeping.begin("task-2", 0, ("s", uuid.uuid4(), 5.0))


def test_finish_releases_the_lock_closes_the_breaker_clears_and_counts_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a delivery that began, failed once, and holds the lock; a half-open breaker
    event_id = uuid.uuid4()
    begun = bookkeeping.begin("task-3", 1, ("sub", event_id, 30.0))
    deliveries.failed("task-3")
    breaker = CircuitBreaker("bookkeeping-test", 1, 60.0)
    breaker.record_failure()
    assert breaker.state().state == OPEN
    # the scripts loaded, as after a worker's first delivery (a server that lost them costs one
    # more round trip: the next test); another test may have flushed them from the shared server
    for script in (effectlock.release_script(), breaker.success_script()):
        client().script_load(script.script)
    counted = CountedCommands(monkeypatch)

    # when
    bookkeeping.finish("task-3", 1, "sub", 0.02, lock=(event_id, str(begun.token)), breaker=breaker)

    # then: everything in one round trip
    assert counted.round_trips == 1
    assert client().get(effectlock.lock_key("sub", event_id)) is None
    assert breaker.state().state == "closed"
    assert deliveries.first_failure("task-3") is None
    assert client().get(key("deliveries", "task-3", "1")) is None
    assert client().hget(key("counters", DELIVERED), "sub") == "1"
    assert latency.histogram("sub").count == 1


def test_finish_leaves_a_lock_that_is_no_longer_its_own(redis_prefix: str) -> None:
    event_id = uuid.uuid4()
    bookkeeping.begin("task-4", 0, ("sub", event_id, 30.0))
    # the lock expired and another delivery took it
    client().set(effectlock.lock_key("sub", event_id), "someone-else")

    bookkeeping.finish("task-4", 0, "sub", 0.01, lock=(event_id, "my-old-token"))

    assert client().get(effectlock.lock_key("sub", event_id)) == "someone-else"


def test_finish_loads_its_scripts_again_when_the_server_forgot_them(redis_prefix: str) -> None:
    # given: a server without the scripts (restarted or emptied since they were loaded)
    event_id = uuid.uuid4()
    begun = bookkeeping.begin("task-5", 0, ("sub", event_id, 30.0))
    breaker = CircuitBreaker("bookkeeping-noscript", 1, 60.0)
    breaker.record_failure()
    # SCRIPT FLUSH empties only the server's script cache; every redis-py client
    # (this one, other tests') loads a script again when the server answers NOSCRIPT.
    client().script_flush()

    # when
    bookkeeping.finish("task-5", 0, "sub", 0.01, lock=(event_id, str(begun.token)), breaker=breaker)

    # then: the release and the breaker's success were still done
    assert client().get(effectlock.lock_key("sub", event_id)) is None
    assert breaker.state().state == "closed"


def test_finish_many_ends_every_attempt_and_counts_the_batch_in_one_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a batch of three deliveries that began
    attempts = [("batch-task-1", 0), ("batch-task-2", 1), ("batch-task-3", 0)]
    deliveries.started_many(attempts)
    counted = CountedCommands(monkeypatch)

    # when
    bookkeeping.finish_many("batched-sub", [0.01, 0.2, 3.0], attempts)

    # then: one round trip for the latencies, the counts and the end of every attempt
    assert counted.round_trips == 1
    assert counters.read(counters.BATCHES)["batched-sub"] == 1
    assert counters.read(counters.BATCHED)["batched-sub"] == 3
    assert counters.read(counters.DELIVERED)["batched-sub"] == 3
    assert latency.histogram("batched-sub").count == 3
    for task_id, retries in attempts:
        assert client().get(key("deliveries", task_id, str(retries))) is None


def test_begin_also_takes_the_token_and_reads_a_closed_breaker_in_the_same_round_trip(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = WindowLimiter("admit-test", limit=2, period=60.0)
    breaker = CircuitBreaker("admit-test", 3, 60.0)
    client().script_load(limiter.acquire_call()[0].script)
    event_id = uuid.uuid4()
    counted = CountedCommands(monkeypatch)

    first = bookkeeping.begin("task-a", 0, ("sub", event_id, 30.0), limiter=limiter, breaker=breaker)

    assert counted.round_trips == 1
    assert first.starts == 1 and first.token is not None
    assert first.admission == bookkeeping.Admission(token_wait=0.0, breaker_closed=True)
    assert limiter.grants_in_window() == 1
    # the window full: a wait, and no grant taken
    bookkeeping.begin("task-b", 0, limiter=limiter, breaker=breaker)
    full = bookkeeping.begin("task-c", 0, limiter=limiter, breaker=breaker)
    assert 59.0 < full.admission.token_wait <= 60.0
    assert limiter.grants_in_window() == 2


def test_begin_only_reads_a_breaker_that_is_not_closed(redis_prefix: str) -> None:
    # given: an open breaker whose reset timeout has passed (the next before_call would probe)
    breaker = CircuitBreaker("admit-open", 1, 0.05)
    breaker.record_failure()
    time.sleep(0.1)

    begun = bookkeeping.begin("task-d", 0, breaker=breaker)

    # then: the caller is sent to before_call; begin took no probe slot
    assert begun.admission == bookkeeping.Admission(token_wait=0.0, breaker_closed=False)
    assert breaker.state().probe_until is None
    assert breaker.before_call() is None  # this caller is the probe
    assert breaker.before_call() is not None  # and only this one


def test_begin_loads_the_limiters_script_again_when_the_server_forgot_it(redis_prefix: str) -> None:
    limiter = WindowLimiter("admit-noscript", limit=5, period=60.0)
    client().script_flush()

    assert bookkeeping.begin("task-e", 0, limiter=limiter).admission.token_wait == 0.0
    assert limiter.grants_in_window() == 1


def test_begin_raises_when_redis_cannot_be_reached_and_a_token_or_the_breaker_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens there
    monkeypatch.setattr(bookkeeping, "client", lambda: unreachable)

    with pytest.raises(redis.RedisError):
        bookkeeping.begin("task-f", 0, breaker=CircuitBreaker("admit-down", 1, 1.0))
    with pytest.raises(redis.RedisError):
        bookkeeping.begin("task-f", 0, limiter=WindowLimiter("admit-down", limit=1, period=1.0))
