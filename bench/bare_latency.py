"""Figure 5's baseline: bare Celery's publish-to-start latency, on ``bench.bare_app``'s app.

The sender passes ``time.time()`` taken just before ``apply_async``; the task
records it with its own ``time.time()`` at start in a Redis list (one RPUSH,
as ``noop`` makes one INCR). Run its worker with ``-A bench.bare_latency``.
"""

from __future__ import annotations

import json
import time

from bench.bare_app import PREFIX, _client, app

STAMPS_KEY = PREFIX + "stamp:started"
QUEUE = "bare_a"

__all__ = ["app", "clear", "count", "send", "stamp", "stamps"]  # app: for celery -A bench.bare_latency


@app.task(name="bench.stamp")
def stamp(number: int, sent_at: float) -> None:
    started_at = time.time()
    _client().rpush(STAMPS_KEY, json.dumps([number, sent_at, started_at]))


def send(number: int) -> None:
    stamp.apply_async((number, time.time()), queue=QUEUE, routing_key=QUEUE, retry=False)


def stamps() -> list[tuple[int, float, float]]:
    """``(number, sent_at, started_at)`` of every task started since the last ``clear()``."""
    return [tuple(json.loads(raw)) for raw in _client().lrange(STAMPS_KEY, 0, -1)]  # type: ignore[misc]


def count() -> int:
    return int(_client().llen(STAMPS_KEY))


def clear() -> None:
    _client().delete(STAMPS_KEY)
