"""Figure 1: what publishing costs inside a request, against the naive direct ``.delay()``.

Each side is a function of a fresh integer (a user id or a sign-up number);
one repetition times ``calls`` calls of each side, one call at a time. Nobody
consumes the messages: the queues are emptied between blocks, untimed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from unittest import mock

from django.db import transaction
from django.test import Client

from bench import naive
from bench.environment import BenchEnv, purge_queues, queue_depths
from bench.stats import Latency
from eventbus.outbox.publish import publish
from project import queues
from signups.events import UserSignedUp, aggregate_of
from signups.services import sign_up

PASSWORD = "correct horse battery staple"  # passes the password validators
SUBSCRIBER_QUEUES = (queues.NOTIFICATIONS, queues.ANALYTICS)

Call = Callable[[int], object]


@dataclass(frozen=True)
class Side:
    name: str
    call: Call
    around: Callable[[], AbstractContextManager[object]] = field(default=contextlib.nullcontext)
    """Entered once around a block of calls, outside the timing."""


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    candidate: Side
    baseline: Side
    calls: int


# A fresh number per call across the whole run: new users, new aggregates, new addresses.
_numbers = itertools.count(1_000_000)


def outbox_publish(n: int) -> None:
    with transaction.atomic():
        publish(UserSignedUp(user_id=n, channel="web"), aggregate=aggregate_of(n))


def outbox_sign_up(n: int) -> None:
    sign_up(f"outbox-{n}@example.com", PASSWORD)


def naive_sign_up(n: int) -> None:
    naive.sign_up(f"naive-{n}@example.com", PASSWORD)


def _post_signup(prefix: str, n: int) -> None:
    email = f"{prefix}-{n}@example.com"
    data = {"email": email, "password": PASSWORD, "password_confirm": PASSWORD}
    response = Client().post("/signup/", data)
    if response.status_code != 302:
        raise RuntimeError(f"POST /signup/ for {email} answered {response.status_code}, not a redirect")


def outbox_request(n: int) -> None:
    _post_signup("request-outbox", n)


def naive_request(n: int) -> None:
    _post_signup("request-naive", n)


def naive_view() -> AbstractContextManager[object]:
    # The same view, with the service's sign_up swapped for the naive one in
    # this process only, around the block; the app's code is unchanged.
    return mock.patch("signups.views.sign_up", naive.sign_up)


def figures(calls_publish: int, calls_sign_up: int, calls_request: int) -> list[Figure]:
    return [
        Figure(
            "Pa_publish",
            "publish() in a transaction, with on-commit dispatch",
            Side("outbox publish()", outbox_publish),
            Side("empty transaction + 2 x .delay()", naive.publish),
            calls_publish,
        ),
        Figure(
            "Pb_sign_up",
            "sign_up() service call",
            Side("signups.services.sign_up", outbox_sign_up),
            Side("naive sign-up + 2 x .delay()", naive_sign_up),
            calls_sign_up,
        ),
        Figure(
            "Pc_request",
            "POST /signup/ through Django's test Client",
            Side("view with sign_up", outbox_request),
            Side("view with naive sign-up", naive_request, naive_view),
            calls_request,
        ),
    ]


def time_block(side: Side, calls: int) -> list[float]:
    """Microseconds per call, ``calls`` calls, each with a fresh number."""
    gc.collect()
    samples: list[float] = []
    call = side.call
    with side.around():
        for _ in range(calls):
            n = next(_numbers)
            start = time.perf_counter_ns()
            call(n)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def measure(env: BenchEnv, figure: Figure, repetition: int) -> dict[str, Latency]:
    """One repetition of ``figure``: both sides, candidate first on even repetitions."""
    sides = [figure.candidate, figure.baseline]
    if repetition % 2:
        sides.reverse()
    result: dict[str, Latency] = {}
    for side in sides:
        purge_queues(env, SUBSCRIBER_QUEUES)
        role = "candidate" if side is figure.candidate else "baseline"
        result[role] = Latency.of(time_block(side, figure.calls))
        check_sent(env, side, figure.calls)
    purge_queues(env, SUBSCRIBER_QUEUES)
    return result


def check_sent(env: BenchEnv, side: Side, calls: int) -> None:
    """Both sides must have sent one message per call to each queue: none held back, shed or lost."""
    depths = queue_depths(env, SUBSCRIBER_QUEUES)
    if any(depth != calls for depth in depths.values()):
        raise RuntimeError(f"{side.name}: {calls} calls left {depths} messages in the queues, not {calls} each")


def warm_up(env: BenchEnv, figure: Figure, calls: int) -> None:
    """Untimed calls of both sides: imports, caches, connections and the first pages of each table."""
    for side in (figure.candidate, figure.baseline):
        time_block(side, calls)
    purge_queues(env, SUBSCRIBER_QUEUES)
