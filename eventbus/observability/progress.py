"""Each worker's progress in the bus's Redis: when it started, which queues it consumes, when it last finished a task.

What eventbus/observability/stalls.py judges a worker by ("alive but no longer
consuming": celery#8030, #10205, #10302). Per worker node name, one hash
``<prefix>eventbus:worker:<node>`` with ``started``, ``seen``, ``finished``,
``idle`` (Unix seconds) and ``queues``, and an index ``<prefix>eventbus:workers``
(a sorted set of node names by ``seen``):

- the worker's main process writes the whole record when it is ready and
  every ``heartbeat_interval()`` seconds after (a thread of its own, so a
  wedged consumer loop does not stop it), and deletes it on an orderly
  shutdown. Each heartbeat also reads its queues' depths from the broker, on
  a connection of its own, and notes ``idle`` when all of them are empty: a
  worker that had nothing to do is not "quiet" for the verdict, so a burst
  after a long idle spell is not taken for a stall;
- the process that finishes a task (a prefork child, or the main process for
  a batching subscriber's batch, eventbus/delivery/buffer.py) only notes the
  time in memory (``finished``: an assignment, on every delivery); a thread
  of that process writes the latest note at most once every WRITE_INTERVAL
  seconds (or every heartbeat, when EVENTBUS_STALL_AFTER makes that shorter,
  as in tests), so a task never waits on Redis for it and a slow Redis
  delays only the note;
- every write sets RECORD_TTL on the record, and each heartbeat drops index
  entries older than it: a worker gone for good (killed, its host lost)
  disappears within RECORD_TTL seconds, and nothing grows forever.

``queues`` are those the worker was started with, plus any it was told to add:
a queue whose consumer was cancelled (by ``celery control cancel_consumer`` or
a consumer that silently stopped) is still the worker's duty, which is what
lets a stall be seen. Best effort, like the counters: a write that fails is
logged and tried again at the next interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from celery.signals import task_postrun, worker_ready, worker_shutdown
from django.conf import settings

from eventbus.protection.backpressure import read_depth
from eventbus.redis import client, key

log = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0
"""Seconds between a process's writes of its last finish: the write's cost is paid at most once a second."""
RECORD_TTL = 30.0
"""Seconds a record outlives its last write: six heartbeats missed, the worker is gone."""


def heartbeat_interval(stall_after: float) -> float:
    """Seconds between a worker main process's writes of its whole record (and reads of its queues' depths):
    5, or a quarter of EVENTBUS_STALL_AFTER when that is shorter (a test's)."""
    return min(5.0, stall_after / 4)


@dataclass(frozen=True)
class WorkerProgress:
    """One worker's record as read back."""

    worker: str
    """The node name, e.g. ``notifications@web-1``."""
    queues: tuple[str, ...]
    started: float | None
    seen: float | None
    finished: float | None
    """When a process of the worker last finished a task (any outcome); None: none since it started."""
    idle: float | None = None
    """When its main process last found every queue of the worker empty; None: not since it started."""


class _Process:
    """This process's notes and its writer thread (started on first need; a forked child starts afresh)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.node: str | None = None
        self.finished: float | None = None
        self.written: float | None = None
        # Set in a worker's main process only: the queues it was started with, and its app.
        self.started: float | None = None
        self.duty: frozenset[str] = frozenset()
        self.app: Any = None
        self.interval = 5.0
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def ensure_thread(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="eventbus-progress", daemon=True)
                self.thread.start()

    def run(self) -> None:
        last_beat = 0.0
        while not self.stop.wait(min(WRITE_INTERVAL, self.interval)):
            try:
                if self.started is not None and time.monotonic() - last_beat >= self.interval:
                    self.heartbeat()
                    last_beat = time.monotonic()
                else:
                    self.write_finish()
            except Exception as exc:  # best effort, and the thread must outlive any failure
                log.warning("worker progress not written: %s", exc)

    def queues(self) -> tuple[str, ...]:
        current: Iterable[str] = ()
        if self.app is not None:
            current = self.app.amqp.queues.consume_from.keys()
        return tuple(sorted(self.duty | set(current)))

    def heartbeat(self) -> None:
        node = self.node
        if node is None:
            return
        queues = self.queues()
        checked = time.time()  # before the read: a message that came during it is not hidden
        idle = self.all_empty(queues)
        now = time.time()
        fields: dict[str, Any] = {"started": self.started, "seen": now, "queues": ",".join(queues)}
        if idle:
            fields["idle"] = checked
        finished = self.finished
        if finished is not None:
            fields["finished"] = finished
        pipe = client().pipeline(transaction=False)
        pipe.hset(key("worker", node), mapping=fields)
        pipe.expire(key("worker", node), int(RECORD_TTL))
        pipe.zadd(key("workers"), {node: now})
        pipe.zremrangebyscore(key("workers"), "-inf", now - RECORD_TTL)
        pipe.expire(key("workers"), int(RECORD_TTL))
        pipe.execute()
        self.written = finished

    def all_empty(self, queues: tuple[str, ...]) -> bool:
        """True when the broker says no message waits in any of ``queues``; False when it cannot say."""
        if self.app is None:
            return False
        try:
            with self.app.connection_for_read() as connection:
                channel = connection.default_channel
                return all(read_depth(channel, queue) == 0 for queue in queues)
        except Exception as exc:  # the broker's errors: the record is still written, without "idle"
            log.warning("worker progress: queue depths not read: %s", exc)
            return False

    def write_finish(self) -> None:
        node, finished = self.node, self.finished
        if node is None or finished is None or finished == self.written:
            return
        pipe = client().pipeline(transaction=False)
        pipe.hset(key("worker", node), "finished", finished)
        # A record whose main process is gone must still expire.
        pipe.expire(key("worker", node), int(RECORD_TTL))
        pipe.execute()
        self.written = finished


_process = _Process()


def _after_fork() -> None:
    # A prefork child inherits the parent's notes but not its thread: it starts its own, with its own notes.
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_after_fork)


def finished(node: str) -> None:
    """Note that a task of worker ``node`` ended in this process (called on every delivery: an assignment)."""
    state = _process
    state.node = node
    state.finished = time.time()
    if state.thread is None:
        state.ensure_thread()


def read(workers: Iterable[str] | None = None) -> list[WorkerProgress]:
    """The records of ``workers`` (node names), or of every worker seen within RECORD_TTL, by name.

    Raises ``redis.RedisError`` when Redis cannot be read.
    """
    connection = client()
    if workers is None:
        names = sorted(connection.zrangebyscore(key("workers"), time.time() - RECORD_TTL, "+inf"))
    else:
        names = sorted(set(workers))
    pipe = connection.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(key("worker", name))
    found = []
    for name, raw in zip(names, pipe.execute(), strict=True):
        if raw:
            found.append(
                WorkerProgress(
                    worker=name,
                    queues=tuple(q for q in raw.get("queues", "").split(",") if q),
                    started=_seconds(raw.get("started")),
                    seen=_seconds(raw.get("seen")),
                    finished=_seconds(raw.get("finished")),
                    idle=_seconds(raw.get("idle")),
                )
            )
    return found


def _seconds(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


# --- Celery's signals ---------------------------------------------------------


def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """The worker's main process (``sender``: its consumer) writes its record now and every heartbeat."""
    state = _process
    state.node = sender.hostname
    state.app = sender.app
    state.duty = frozenset(sender.app.amqp.queues.consume_from.keys())
    state.started = time.time()
    state.finished = None
    state.interval = heartbeat_interval(settings.EVENTBUS_STALL_AFTER)
    try:
        client().delete(key("worker", state.node))  # a previous life's finish is not this one's
        state.heartbeat()
    except redis.RedisError as exc:
        log.warning("worker progress not written: %s", exc)
    state.ensure_thread()


def on_task_postrun(sender: Any = None, **_: Any) -> None:
    node = getattr(getattr(sender, "request", None), "hostname", None)
    if node:
        finished(node)


def on_worker_shutdown(**_: Any) -> None:
    """An orderly stop removes the record at once (a killed worker's expires)."""
    global _process
    state = _process
    state.stop.set()
    _process = _Process()  # a worker started again in this process (a test's) starts afresh
    if state.started is None or state.node is None:
        return
    try:
        client().pipeline(transaction=False).delete(key("worker", state.node)).zrem(
            key("workers"), state.node
        ).execute()
    except redis.RedisError as exc:
        log.warning("worker progress not removed: %s", exc)


def connect() -> None:
    """Connect the hooks (idempotent: each has a dispatch_uid); eventbus/signals.py calls it."""
    worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="eventbus.progress.ready")
    task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="eventbus.progress.postrun")
    worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="eventbus.progress.shutdown")
