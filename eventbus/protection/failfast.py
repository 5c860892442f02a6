"""Fail fast on the request path: after a side service failed, stop asking it for a few seconds.

A request (a sign-up, a telemetry post) asks two side services: the Redis of
the limits and counters, and the broker. Each call is bounded by a short
socket timeout (EVENTBUS_REQUEST_TIMEOUT, derived from
EVENTBUS_PUBLISH_TIMEOUT), but a service that hangs would still cost that
timeout to every request. So a process remembers a failure (refused, timed
out, any error of the service): for EVENTBUS_FAILFAST_SECONDS every
request-path call to that service raises ``Unavailable`` at once, without
touching the network, and the request goes on without it (the limit is not
applied, the event stays in the outbox for the relay).

When the window has passed, the next caller is let through alone, as a probe;
the others keep getting ``Unavailable`` until it returns. Its success closes
the gate, its failure opens it for another window. This is the circuit
breaker's pattern (eventbus/protection/breaker.py) with one difference: its state lives
in the process's memory, not in Redis, because what it protects against is
the service that would hold a shared state.

Only the request path goes through here. Workers, beat and the relay keep
their own longer timeouts and their own retries: waiting is their job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The service failed a moment ago; this call was not made."""


class FailFast:
    """One side service's gate, shared by the threads of this process.

    ``attempt()`` wraps one request-path call: it raises ``Unavailable``
    without running the block while the gate is open, and opens the gate
    when the block raises one of ``errors`` (which it re-raises).
    """

    def __init__(self, service: str, errors: tuple[type[BaseException], ...]) -> None:
        self.service = service
        self.errors = errors
        self._lock = threading.Lock()
        self._open_until: float | None = None
        """None: closed (ask). Otherwise: do not ask before this monotonic time."""
        self._probing = False
        """The window has passed and one caller is asking; the others still wait for its answer."""

    @contextmanager
    def attempt(self) -> Iterator[None]:
        probe = self._admit()
        try:
            yield
        except self.errors as exc:
            self._failed(exc)
            raise
        except BaseException:
            # Not the service's failure (a bug, an interrupt): leave the gate as it was.
            if probe:
                with self._lock:
                    self._probing = False
            raise
        else:
            self._succeeded()

    def is_open(self) -> bool:
        """Would a call be refused now (the window has not passed, or a probe is out)?"""
        with self._lock:
            return self._open_until is not None and (self._probing or time.monotonic() < self._open_until)

    def reset(self) -> None:
        """Close the gate (tests, and an operator's shell)."""
        with self._lock:
            self._open_until = None
            self._probing = False

    def _admit(self) -> bool:
        """True if the caller is the probe; raises Unavailable if it may not ask."""
        with self._lock:
            if self._open_until is None:
                return False
            if self._probing or time.monotonic() < self._open_until:
                raise Unavailable(f"{self.service} failed a moment ago; not asked again before its window ends")
            self._probing = True
            return True

    def _failed(self, exc: BaseException) -> None:
        window = settings.EVENTBUS_FAILFAST_SECONDS
        with self._lock:
            was_closed = self._open_until is None
            self._open_until = time.monotonic() + window
            self._probing = False
        if was_closed:
            log.warning(
                "%s failed on the request path (%s: %s); not asked by this process for %.1fs",
                self.service,
                type(exc).__name__,
                exc,
                window,
            )

    def _succeeded(self) -> None:
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = None
            self._probing = False
        if was_open:
            log.info("%s answers again on the request path", self.service)


REDIS = FailFast("redis", (redis.RedisError,))
"""The Redis of the limits and counters (REDIS_URL): sign-up throttle, device budget, 429 counters."""

BROKER = FailFast("broker", (Exception,))
"""The broker (CELERY_BROKER_URL): queue depth reads and publishing. Its errors are many and transport-specific."""
