"""Backoff: exponential ceilings under a cap, full jitter below them."""

from __future__ import annotations

import random

from eventbus.contract.retry import RetryPolicy


def test_ceilings_double_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=8, base_delay=2, max_delay=600)

    assert [policy.ceiling(n) for n in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600]


def test_delays_stay_within_their_ceiling() -> None:
    policy = RetryPolicy(base_delay=2, max_delay=60)
    rng = random.Random(7)
    for retries in range(12):
        for _ in range(50):
            assert 0 <= policy.delay(retries, rng) <= policy.ceiling(retries)


def test_defaults_come_from_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.EVENTBUS_RETRY_MAX_RETRIES = 3
    assert RetryPolicy().max_retries == 3
    assert RetryPolicy(max_retries=1).max_retries == 1


def test_only_declared_exceptions_are_transient() -> None:
    policy = RetryPolicy(transient=(TimeoutError,))
    assert policy.is_transient(TimeoutError())
    assert not policy.is_transient(ValueError())
