"""The cluster-wide token bucket: parse_rate, and its bound under several processes against a real Redis."""

from __future__ import annotations

import bisect
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from eventbus import redis as eventbus_redis
from eventbus.protection.tokenbucket import Rate, TokenBucket, parse_rate
from tests import bounds

REPO = Path(__file__).resolve().parents[2]

# Decisions come back in whole microseconds, rounded up.
MICROSECOND = 1e-6


# --- parse_rate ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second", "capacity"),
    [
        ("10/s", 10.0, 10.0),
        ("600/m", 10.0, 10.0),
        ("36000/h", 10.0, 10.0),
        ("2.5/s", 2.5, 2.5),
        (" 100 / s ", 100.0, 100.0),
        # Slower than one a second: the bucket still holds one whole token.
        ("30/m", 0.5, 1.0),
        ("1/h", 1 / 3600, 1.0),
    ],
)
def test_parse_rate_reads_tokens_per_second_and_a_one_second_burst(
    text: str, per_second: float, capacity: float
) -> None:
    rate = parse_rate(text)

    assert rate.tokens_per_second == pytest.approx(per_second)
    assert rate.capacity == pytest.approx(capacity)


@pytest.mark.parametrize(
    "text", ["", "10", "10/", "/s", "10/x", "10/sec", "0/s", "-1/s", "1e3/s", "nan/s", "inf/s", "10/s/s", "ten/s"]
)
def test_parse_rate_refuses_a_bad_value_naming_the_setting_and_the_fix(text: str) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        parse_rate(text, setting="EMAIL_RATE_LIMIT")

    message = str(excinfo.value)
    assert message.startswith(f"EMAIL_RATE_LIMIT={text!r} is not a rate")
    assert "'10/s'" in message


def test_parse_rate_refuses_a_number_too_large_to_be_finite() -> None:
    with pytest.raises(ImproperlyConfigured, match="EMAIL_RATE_LIMIT"):
        parse_rate("9" * 400 + "/s", setting="EMAIL_RATE_LIMIT")


def test_rate_refuses_a_capacity_below_one_token() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Rate.per_second(10, capacity=0.5)


def test_a_bad_rate_in_the_environment_stops_the_process_at_start() -> None:
    env = dict(os.environ, EMAIL_RATE_LIMIT="10 per second", DJANGO_SETTINGS_MODULE="project.settings")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: EMAIL_RATE_LIMIT='10 per second' is not a rate" in result.stderr


# --- One process ----------------------------------------------------------------


def test_a_new_bucket_is_full_then_refuses_with_the_wait_for_the_next_token(redis_prefix: str) -> None:
    bucket = TokenBucket("full", parse_rate("10/s"))

    decisions = [bucket.decide() for _ in range(11)]

    assert all(d.granted for d in decisions[:10])
    refused = decisions[10]
    # A token arrives every 0.1 s; the time spent granting the first ten already brought part of one.
    elapsed = refused.at - decisions[0].at
    assert not refused.granted
    assert refused.wait == pytest.approx(0.1 - elapsed, abs=2 * MICROSECOND)


def test_the_wait_it_returns_is_enough_for_a_lone_caller(redis_prefix: str) -> None:
    bucket = TokenBucket("refill", parse_rate("20/s"))
    while bucket.try_acquire() == 0.0:
        pass

    # given an empty bucket and its answer
    wait = bucket.try_acquire()
    # when the caller waits that long
    time.sleep(wait)
    # then a token is there
    assert bucket.try_acquire() == 0.0


def test_state_is_one_hash_under_the_prefix_that_expires_once_the_bucket_would_be_full(redis_prefix: str) -> None:
    bucket = TokenBucket("ttl", parse_rate("5/s"))

    decided_at = bucket.decide().at

    connection = eventbus_redis.client()
    assert bucket.redis_key == f"{redis_prefix}eventbus:ratelimit:ttl"
    assert set(connection.hgetall(bucket.redis_key)) == {"tokens", "ts"}
    # The moment the key expires, on the server's clock, however long ago the decision was:
    # refilling 5 tokens at 5/s takes 1 s; one more second of margin.
    pipe = connection.pipeline(transaction=True)
    pipe.time()
    pipe.pttl(bucket.redis_key)
    (seconds, microseconds), ttl_ms = pipe.execute()
    expires_at = seconds + microseconds / 1_000_000 + ttl_ms / 1000
    assert decided_at + 1.0 < expires_at <= decided_at + 2.0 + 0.001


def test_more_tokens_than_the_bucket_holds_is_a_programming_error(redis_prefix: str) -> None:
    bucket = TokenBucket("big", parse_rate("10/s"))

    with pytest.raises(ValueError, match="1 to 10 tokens"):
        bucket.try_acquire(11)
    with pytest.raises(ValueError, match="not 0"):
        bucket.try_acquire(0)
    assert bucket.try_acquire(10) == 0.0


# --- Several processes ------------------------------------------------------------

HAMMER_RATE = "10/s"
HAMMER_PROCESSES = 4
# Each process asks until it got this many: 32 grants through a bucket of 10 that refills 10 a second.
HAMMER_GRANTS = 8


def _hammer(name: str, rate: Rate, start: Any, results: Any) -> None:
    """One worker process: ask as fast as it can until granted ``HAMMER_GRANTS`` times; report the
    grant times (Redis server clock) and the refusals' waits."""
    try:
        bucket = TokenBucket(name, rate)
        start.wait(timeout=30)
        deadline = time.monotonic() + bounds.rate_limited(HAMMER_PROCESSES * HAMMER_GRANTS, rate.tokens_per_second)
        granted: list[float] = []
        refused = 0
        shortest, longest = math.inf, 0.0
        while len(granted) < HAMMER_GRANTS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"granted {len(granted)} of {HAMMER_GRANTS} by the deadline")
            decision = bucket.decide()
            if decision.granted:
                granted.append(decision.at)
            else:
                refused += 1
                shortest, longest = min(shortest, decision.wait), max(longest, decision.wait)
        results.put(("ok", granted, refused, shortest, longest))
    except BaseException as exc:
        results.put(("error", repr(exc), 0, 0.0, 0.0))
        raise


def _most_in_any_window(times: list[float], length: float) -> int:
    """The most grants inside any closed window [t, t + length]; a busiest window starts at a grant."""
    return max(bisect.bisect_right(times, t + length) - i for i, t in enumerate(times))


@pytest.mark.slow
def test_processes_sharing_a_bucket_never_exceed_capacity_plus_rate_times_window(redis_prefix: str) -> None:
    rate = parse_rate(HAMMER_RATE)
    total = HAMMER_PROCESSES * HAMMER_GRANTS
    # Forked workers inherit this test's settings (REDIS_URL, REDIS_KEY_PREFIX), like prefork Celery workers.
    context = multiprocessing.get_context("fork")
    start = context.Barrier(HAMMER_PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_hammer, args=("hammered", rate, start, results), name=f"hammer-{n}")
        for n in range(HAMMER_PROCESSES)
    ]

    # given four processes hammering one bucket, each until it got its share
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=bounds.rate_limited(total, rate.tokens_per_second)) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [report[1] for report in reports if report[0] == "error"]

    # then every call went through in the end: nothing starved
    assert not errors, errors
    times = sorted(t for report in reports for t in report[1])
    assert len(times) == total

    # and the grants, on the Redis server's clock, respect C + r*T for every window length T
    # The bound is tight (a full bucket plus every token that arrived): allow for microseconds turned into floats.
    span = times[-1] - times[0] + MICROSECOND
    assert len(times) <= rate.capacity + rate.tokens_per_second * span
    for length in (0.25, 1.0, 2.0):
        bound = rate.capacity + rate.tokens_per_second * length
        assert _most_in_any_window(times, length) <= bound, f"a {length}s window granted more than {bound}"

    # and every refusal said to wait, at most the time one token takes to arrive
    refused = sum(report[2] for report in reports)
    shortest = min(report[3] for report in reports)
    longest = max(report[4] for report in reports)
    assert refused > 0
    assert shortest > 0
    assert longest <= 1 / rate.tokens_per_second + 2 * MICROSECOND
