"""The shared circuit breaker's state machine against a real Redis, with time driven by the test.

Nothing here waits for the wall clock: the reset timeout and the probe's lease
are an hour, far longer than any test takes however loaded the machine, and a
test lets time pass with ``elapse``, which moves the moments the breaker's state
holds into the past, as if the time had gone by.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from eventbus import redis as eventbus_redis
from eventbus.fastpath.bookkeeping import RoundTrip
from eventbus.protection.breaker import CircuitBreaker

RESET = 3600.0
# Decisions come back in whole microseconds; the server's clock is read as a float.
MICROSECOND = 2e-6
# The moments of the breaker's hash, in whole microseconds of the Redis server's clock (eventbus/protection/breaker.py).
MOMENTS = ("opened_at", "half_open_at", "probe_until")


def server_now() -> float:
    seconds, microseconds = eventbus_redis.client().time()
    return seconds + microseconds / 1_000_000


def elapse(breaker: CircuitBreaker, seconds: float) -> None:
    """Let ``seconds`` pass for ``breaker``: each moment its state holds moves that far into the past.

    The breaker compares those moments with the Redis server's clock and nothing
    else, so to it this is the time going by.
    """
    connection = eventbus_redis.client()
    held = dict(zip(MOMENTS, connection.hmget(breaker.redis_key, MOMENTS), strict=True))
    shift = round(seconds * 1_000_000)
    connection.hset(
        breaker.redis_key, mapping={name: int(value) - shift for name, value in held.items() if value is not None}
    )


def assert_told_to_wait_until(breaker: CircuitBreaker, moment: float | None) -> float:
    """``before_call`` refuses, with the wait from the moment it was called until ``moment``."""
    assert moment is not None
    before = server_now()
    wait = breaker.before_call()
    after = server_now()
    assert wait is not None, "the caller was let through"
    assert moment - after - MICROSECOND <= wait <= moment - before + MICROSECOND
    return wait


def record_success(breaker: CircuitBreaker) -> None:
    """The provider answered: the breaker's success as a delivery sends it, in the round trip after the effect."""
    round_trip = RoundTrip()
    before = round_trip.script(*breaker.success_call())
    round_trip.send()
    breaker.note_success(before.first)


def opened(breaker: CircuitBreaker) -> CircuitBreaker:
    """Fail ``breaker`` until it opens."""
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state().state == "open"
    return breaker


def until_half_open(breaker: CircuitBreaker) -> None:
    elapse(breaker, breaker.reset_timeout)


def race_for_the_probe(breaker: CircuitBreaker, callers: int = 16) -> list[float | None]:
    """``callers`` threads call ``before_call`` at the same moment; their answers."""
    start = threading.Barrier(callers)
    answers: list[float | None] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait(timeout=10)
        answer = breaker.before_call()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == callers
    return answers


def test_a_new_breaker_is_closed(redis_prefix: str) -> None:
    breaker = CircuitBreaker("new", failure_threshold=3, reset_timeout=RESET)

    state = breaker.state()

    assert (state.state, state.consecutive_failures, state.opened_at, state.half_open_at) == ("closed", 0, None, None)
    assert breaker.before_call() is None


def test_failures_below_the_threshold_keep_it_closed_and_the_threshold_opens_it(redis_prefix: str) -> None:
    breaker = CircuitBreaker("threshold", failure_threshold=3, reset_timeout=RESET)

    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state().state == "closed"
    assert breaker.state().consecutive_failures == 2
    assert breaker.before_call() is None

    breaker.record_failure()

    state = breaker.state()
    assert state.state == "open"
    assert state.consecutive_failures == 3
    assert state.opened_at is not None
    assert state.half_open_at == pytest.approx(state.opened_at + RESET)


def test_an_open_breaker_refuses_everyone_with_the_wait_until_it_half_opens(redis_prefix: str) -> None:
    breaker = opened(CircuitBreaker("refuses", failure_threshold=2, reset_timeout=RESET))
    half_open_at = breaker.state().half_open_at
    assert half_open_at is not None

    for _ in range(5):
        answer = assert_told_to_wait_until(breaker, half_open_at)
        assert 0 < answer <= RESET


def test_a_success_resets_the_consecutive_count(redis_prefix: str) -> None:
    breaker = CircuitBreaker("resets", failure_threshold=3, reset_timeout=RESET)

    # given two failures, a success, then two more failures
    breaker.record_failure()
    breaker.record_failure()
    record_success(breaker)
    breaker.record_failure()
    breaker.record_failure()

    # then the count is two, not four, and the breaker is closed
    state = breaker.state()
    assert (state.state, state.consecutive_failures) == ("closed", 2)
    assert breaker.before_call() is None


def test_after_the_reset_timeout_exactly_one_of_many_concurrent_callers_probes(redis_prefix: str) -> None:
    # The probe's lease is RESET too: however long the 16 callers take to arrive,
    # it does not run out. What is tested here is the race, not the lease.
    lease = RESET
    breaker = opened(CircuitBreaker("race", failure_threshold=1, reset_timeout=RESET))

    # Three rounds: a failed probe reopens it, and the next race has one winner again.
    for _ in range(3):
        until_half_open(breaker)
        assert breaker.state().state == "half_open"

        answers = race_for_the_probe(breaker)

        assert answers.count(None) == 1
        for answer in answers:
            assert answer is None or 0 < answer <= lease
        assert breaker.state().probe_until is not None
        breaker.record_failure()


def test_a_probe_that_succeeds_closes_the_breaker_for_everyone(redis_prefix: str) -> None:
    breaker = opened(CircuitBreaker("probe-ok", failure_threshold=2, reset_timeout=RESET))
    until_half_open(breaker)
    assert breaker.before_call() is None
    assert breaker.before_call() is not None

    record_success(breaker)

    state = breaker.state()
    assert (state.state, state.consecutive_failures, state.opened_at, state.probe_until) == ("closed", 0, None, None)
    assert [breaker.before_call() for _ in range(3)] == [None, None, None]


def test_a_probe_that_fails_reopens_it_for_another_reset_timeout(redis_prefix: str) -> None:
    breaker = opened(CircuitBreaker("probe-fails", failure_threshold=2, reset_timeout=RESET))
    until_half_open(breaker)
    first_opened_at = breaker.state().opened_at
    assert breaker.before_call() is None

    failed_at = server_now()
    breaker.record_failure()

    state = breaker.state()
    assert state.state == "open"
    assert state.consecutive_failures == 3
    assert state.opened_at is not None
    assert first_opened_at is not None
    assert state.opened_at >= failed_at - MICROSECOND
    assert state.opened_at >= first_opened_at + RESET
    assert state.half_open_at == pytest.approx(state.opened_at + RESET)
    wait = assert_told_to_wait_until(breaker, state.half_open_at)
    assert 0 < wait <= RESET


def test_an_abandoned_probe_loses_its_slot_when_its_lease_expires(redis_prefix: str) -> None:
    lease = RESET / 6
    breaker = opened(CircuitBreaker("abandoned", failure_threshold=1, reset_timeout=RESET, probe_lease=lease))
    until_half_open(breaker)

    # given a probe whose worker died: it took the slot and never reported
    assert breaker.before_call() is None
    # then the others are told to wait for the lease, no longer
    wait = assert_told_to_wait_until(breaker, breaker.state().probe_until)
    assert 0 < wait <= lease

    # when the lease runs out
    elapse(breaker, lease)

    # then exactly one caller takes over as the probe
    answers = race_for_the_probe(breaker, callers=8)
    assert answers.count(None) == 1
    assert breaker.state().state == "half_open"


def test_a_late_failure_while_open_is_counted_but_does_not_postpone_the_probe(redis_prefix: str) -> None:
    breaker = opened(CircuitBreaker("late", failure_threshold=2, reset_timeout=RESET))
    before = breaker.state()

    breaker.record_failure()

    after = breaker.state()
    assert after.state == "open"
    assert after.consecutive_failures == before.consecutive_failures + 1
    assert (after.opened_at, after.half_open_at) == (before.opened_at, before.half_open_at)


def test_breakers_with_different_names_are_independent(redis_prefix: str) -> None:
    opened(CircuitBreaker("smtp", failure_threshold=1, reset_timeout=RESET))

    assert CircuitBreaker("other", failure_threshold=1, reset_timeout=RESET).before_call() is None
    assert CircuitBreaker("smtp", failure_threshold=1, reset_timeout=RESET).before_call() is not None


def test_the_state_is_one_hash_under_the_prefix_with_a_ttl(redis_prefix: str) -> None:
    breaker = opened(CircuitBreaker("key", failure_threshold=1, reset_timeout=RESET))

    connection = eventbus_redis.client()
    assert breaker.redis_key == f"{redis_prefix}eventbus:breaker:key"
    assert connection.hget(breaker.redis_key, "state") == "open"
    assert connection.ttl(breaker.redis_key) > 3600


def test_each_transition_is_logged_with_the_breakers_name(redis_prefix: str, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.protection.breaker")
    breaker = CircuitBreaker("logged", failure_threshold=1, reset_timeout=RESET)

    breaker.record_failure()
    until_half_open(breaker)
    breaker.before_call()
    breaker.record_failure()
    until_half_open(breaker)
    breaker.before_call()
    record_success(breaker)

    transitions = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "eventbus.protection.breaker"]
    assert transitions == [
        (
            "WARNING",
            f"circuit breaker logged: closed -> open after 1 consecutive failures; probing again in {RESET:g}s",
        ),
        ("INFO", "circuit breaker logged: open -> half_open; one probe goes ahead"),
        ("WARNING", f"circuit breaker logged: the probe failed; half_open -> open for {RESET:g}s"),
        ("INFO", "circuit breaker logged: open -> half_open; one probe goes ahead"),
        ("INFO", "circuit breaker logged: half_open -> closed"),
    ]


@pytest.mark.parametrize(
    ("threshold", "reset", "lease"),
    [(0, 1.0, None), (1, 0.0, None), (1, -1.0, None), (1, 1.0, 0.0)],
)
def test_nonsense_arguments_are_refused(threshold: int, reset: float, lease: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker("bad", failure_threshold=threshold, reset_timeout=reset, probe_lease=lease)
