"""Narrow public doors to the bus's request-path and speed machinery, for the few app modules that need them.

The bus's rooms are its own; an app that must share their machinery goes
through one of these names, each of which says why it is public:

- the request path (a sign-up's limit, a telemetry post's budget and queue
  check): ``request_client`` and ``request_producer`` carry the short timeouts
  of EVENTBUS_REQUEST_TIMEOUT, and ``REDIS_GATE`` / ``BROKER_GATE`` fail fast
  after a failure (``Unavailable``), so that a hung side service costs a
  request little (eventbus/protection/failfast.py);
- ``queue_pressure``: a queue's depth against its high-water mark, cached for
  EVENTBUS_QUEUE_DEPTH_CACHE, for a door that refuses work the pools cannot take;
- ``count_on_request``: an app's own counter beside the bus's (best effort,
  through the request path's client and gate); ``eventbus.ops_api.read_counter``
  reads it back;
- ``Insert``: a batching subscriber's rows in one INSERT whose SQL is made
  once per database, because the ORM's cost per row was most of a delivery
  (figure 1 of docs/benchmarks.md).
"""

from __future__ import annotations

from eventbus.fastpath.inserts import Insert
from eventbus.fastpath.publishing_batch import request_producer
from eventbus.observability import counters
from eventbus.protection.backpressure import Pressure
from eventbus.protection.backpressure import pressure as queue_pressure
from eventbus.protection.failfast import BROKER as BROKER_GATE
from eventbus.protection.failfast import REDIS as REDIS_GATE
from eventbus.protection.failfast import Unavailable
from eventbus.redis import request_client

__all__ = [
    "BROKER_GATE",
    "REDIS_GATE",
    "Insert",
    "Pressure",
    "Unavailable",
    "count_on_request",
    "queue_pressure",
    "request_client",
    "request_producer",
]


def count_on_request(name: str, label: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name``, ``label``, from a request: short timeout, fail-fast gate, never raises."""
    counters.incr(name, label, amount, request_path=True)
