"""Subscribers that fail permanently, transiently, or while a flag in Redis says "broken".

Each records its attempts in Redis (see probes.py), where the test process
reads them across processes.
"""

from __future__ import annotations

import os
import signal
import time

from celery.exceptions import SoftTimeLimitExceeded

from eventbus import Envelope, RetryPolicy, subscriber
from eventbus.contract.errors import PermanentError
from eventbus.redis import client
from project import queues
from tests.faults.faultapp.events import PROBE
from tests.faults.faultapp.probes import (
    FRAGILE,
    KILLER,
    PERMANENT,
    STUBBORN,
    STUBBORN_HARD_LIMIT,
    STUBBORN_SOFT_LIMIT,
    STUBBORN_SUBSCRIBER,
    TRANSIENT,
    TRANSIENT_BASE_DELAY,
    TRANSIENT_MAX_DELAY,
    TRANSIENT_MAX_RETRIES,
    attempts,
    broken_flag,
    effects_key,
    killed_key,
    record_attempt,
)


class ProviderHiccup(Exception):
    """The transient failure of the transient subscriber."""


@subscriber(PROBE, name=PERMANENT, queue=queues.ANALYTICS, label="always permanent")
def always_permanent(event: Envelope) -> None:
    """Fails for good on every attempt: dead-lettered at once, never retried."""
    record_attempt(PERMANENT, event.id)
    raise PermanentError(f"probe {event.payload.label}: the provider said 550, no such mailbox")


@subscriber(
    PROBE,
    name=TRANSIENT,
    queue=queues.ANALYTICS,
    label="always transient",
    retry=RetryPolicy(
        transient=(ProviderHiccup,),
        max_retries=TRANSIENT_MAX_RETRIES,
        base_delay=TRANSIENT_BASE_DELAY,
        max_delay=TRANSIENT_MAX_DELAY,
    ),
)
def always_transient(event: Envelope) -> None:
    """Fails transiently on every attempt: retried with backoff, then dead-lettered."""
    record_attempt(TRANSIENT, event.id)
    raise ProviderHiccup(f"probe {event.payload.label}: connection reset by the provider")


@subscriber(PROBE, name=FRAGILE, queue=queues.ANALYTICS, label="fragile")
def fragile(event: Envelope) -> None:
    """Fails permanently while the broken flag is set; otherwise counts its effect for the event.

    The effect is a Redis counter, outside the ledger's transaction: good enough to
    see a double effect, which is what the tests look for.
    """
    record_attempt(FRAGILE, event.id)
    if client().exists(broken_flag()):
        raise PermanentError(f"probe {event.payload.label}: handler bug (flag {broken_flag()} is set)")
    client().hincrby(effects_key(FRAGILE), str(event.id), 1)


@subscriber(PROBE, name=KILLER, queue=queues.ANALYTICS, label="kills its process")
def kills_its_process(event: Envelope) -> None:
    """Notes the attempt, then dies by SIGKILL on every one: its worker puts the message back each time."""
    record_attempt(KILLER, event.id)
    client().rpush(killed_key(event.id), os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@subscriber(
    STUBBORN,
    name=STUBBORN_SUBSCRIBER,
    queue=queues.ANALYTICS,
    label="stubborn once",
    soft_time_limit=STUBBORN_SOFT_LIMIT,
    time_limit=STUBBORN_HARD_LIMIT,
)
def stubborn_once(event: Envelope) -> None:
    """On its first attempt, swallows the soft time limit and hangs past the hard one (a library stuck in
    C code would), then its process dies (SIGKILL): the worker meets the hard limit before it sees the
    death, as a loaded worker does. Afterwards it counts its effect at once."""
    record_attempt(STUBBORN_SUBSCRIBER, event.id)
    if len(attempts(STUBBORN_SUBSCRIBER, event.id)) == 1:
        deadline = time.monotonic() + STUBBORN_HARD_LIMIT + 1.0
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except SoftTimeLimitExceeded:
                continue
        os.kill(os.getpid(), signal.SIGKILL)
    client().hincrby(effects_key(STUBBORN_SUBSCRIBER), str(event.id), 1)
