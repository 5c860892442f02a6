"""Writes gathered in the background: a process hands items over, a thread of its own writes many at once.

Some writes need not happen in the code that causes them, only soon after:
the outbox row's dispatched mark (eventbus/fastpath/marks.py) and Celery's result row
of a finished task (eventbus/fastpath/results.py). Each costs a statement and a
commit; on SQLite, a turn for the database's one write lock. A ``Gatherer``
takes them over: its thread wakes when an item arrives, waits ``seconds`` for
others, and hands everything gathered to ``write`` at once.

What a process loses when it dies is what it gathered in the last
``seconds``; each user of a gatherer says why that is safe. A process that
exits in an orderly way writes what it holds, at exit (``atexit``) and when a
Celery pool process shuts down (``flush_on_exit``). That flush first waits for
a write the thread has begun: the interpreter would otherwise cut the daemon
thread off mid-write.

Buys: nothing alone; marks.py (figure 4) and results.py (figure 1) buy with it
(docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from celery.signals import worker_process_shutdown
from django.db import close_old_connections, connection

log = logging.getLogger(__name__)

T = TypeVar("T")


class Gatherer(Generic[T]):
    """One process's pending items and the thread that writes them."""

    def __init__(self, name: str, write: Callable[[list[T]], object], failure: str) -> None:
        """``write`` gets every item gathered; ``failure`` says what a failed write means (logged with the count)."""
        self.name = name
        self._write = write
        self._failure = failure
        self._reset()

    def _reset(self) -> None:
        # Also the state of a forked child: the parent's pending items are the parent's to write,
        # and a lock held at the fork would never be released here.
        self._wake = threading.Condition()
        # Held for a whole write: a flush at exit waits for the thread's write in progress.
        self._writing = threading.Lock()
        self._pending: list[T] = []
        self._thread: threading.Thread | None = None
        self._seconds = 0.0

    def add(self, items: Sequence[T], seconds: float) -> None:
        """Write these items within ``seconds``, together with the others gathered meanwhile."""
        with self._wake:
            self._pending.extend(items)
            self._seconds = seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._pending)

    def flush(self) -> int:
        """Write every item gathered so far; returns how many. A failure is logged, never raised."""
        with self._writing:
            with self._wake:
                items, self._pending = self._pending, []
            if not items:
                return 0
            try:
                self._write(items)
            except Exception:
                log.exception("%s: could not write %d items; %s", self.name, len(items), self._failure)
                connection.close()  # this thread's; the next flush opens a fresh one
                return 0
            return len(items)

    def flush_on_exit(self) -> None:
        """Write what is held when this process exits in an orderly way (call once, for a module's gatherer)."""
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.flush)
        # A Celery pool process ends with os._exit, which runs no atexit hook.
        worker_process_shutdown.connect(lambda **_: self.flush(), weak=False, dispatch_uid=f"gatherer-{self.name}")

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                wait = self._seconds
            # Gather: what arrives in the next ``wait`` seconds shares this write.
            time.sleep(wait)
            # As Django does before each request: a connection past its age or broken is replaced.
            close_old_connections()
            self.flush()
