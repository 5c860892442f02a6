"""``task-sent`` events only while something listens for them.

With ``CELERY_TASK_SEND_SENT_EVENT`` on, every task message a producer sends
is followed by a ``task-sent`` event, so that Flower can show a task as sent
before a worker takes it. On Redis an event is a ``PUBLISH`` on the
``celeryev`` channel: nothing keeps it, and a process that is not subscribed
at that moment (Flower, ``celery events``) never sees it; building and
publishing it costs the request also when no listener is there.

Redis says how many subscribers got each ``PUBLISH`` (pattern subscribers
included). The project's Redis channel (eventbus/fastpath/broker.py) reports that
count after each batch of messages; when the events reached nobody, this
process sends none for ``QUIET_SECONDS``, then one batch's events again to
ask. A listener that subscribes meanwhile misses at most that long of
``task-sent`` events; it gets every event the workers send, and every
``task-sent`` after that. Nothing else depends on them. Other transports
(RabbitMQ) never report, and always send.

Buys: figure Pa, not measured alone: 0.59x -> 0.43x between two full runs, with lever 25; figure 4 nothing
(lever 26, docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import time

QUIET_SECONDS = 1.0
"""How long a process sends no ``task-sent`` events after its last ones reached no subscriber."""

_quiet_until = 0.0


def wanted() -> bool:
    """Whether the next messages should carry their ``task-sent`` events."""
    return time.monotonic() >= _quiet_until


def heard(subscribers: int) -> None:
    """The last batch's ``task-sent`` events reached ``subscribers`` subscribers in all."""
    global _quiet_until
    _quiet_until = 0.0 if subscribers > 0 else time.monotonic() + QUIET_SECONDS
