"""Dispatched marks gathered in the background and written many rows per UPDATE.

Once the broker has taken an event's messages, its outbox row is marked
``dispatched``, so that the relay does not send it again. Written by the
request that sent the event, that mark is a second write transaction per
request, after the one that wrote the change and the row. On SQLite, every
write transaction waits its turn for the database's one write lock, and under
concurrent sign-ups the mark was a second turn per request (figure 4 of
docs/benchmarks.md).

With ``EVENTBUS_MARK_BATCH_SECONDS`` above 0, the request hands its outcome to
this process's marker and returns. The marker's thread wakes when an outcome
arrives, waits that many seconds for others, and writes all of them in one
transaction (``dispatch.settle``: one UPDATE per set of subscribers).

The delivery guarantee is unchanged:
- An event is sent once the broker has its messages. The mark does not send
  anything; it tells the relay that the event needs nothing more.
- A process that dies before its marker writes leaves those rows pending.
  The relay sends them again once ``EVENTBUS_RELAY_GRACE`` has passed, and the
  consumers' ledger makes the second delivery harmless. This is the same case
  as a process killed between the send and the mark, which could always
  happen. The grace must therefore be several times the batch time; settings
  checks this at start.
- A process that exits in an orderly way writes what it holds: at exit, and
  when a Celery pool process shuts down. That flush first waits for a write
  the thread has begun (figure 4's check, all rows dispatched after gunicorn's
  graceful stop, caught rows lost when it did not).

Only outcomes sent to every subscriber wait here. A shed, deferred or partial
outcome writes the ledger or names who still waits, so the request settles it
at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celery.signals import worker_process_shutdown
from django.db import close_old_connections, connection, transaction

# The module, not its names: eventbus.dispatch imports this one.
from eventbus import dispatch

if TYPE_CHECKING:
    from eventbus.dispatch import Outcome

log = logging.getLogger(__name__)


def can_wait(outcomes: Sequence[Outcome]) -> bool:
    """Whether these outcomes only need their rows marked dispatched (nothing shed, deferred or partial)."""
    return all(not (o.shed or o.deferred or o.partial) for o in outcomes)


class Marker:
    """One process's pending marks and the thread that writes them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also the state of a forked child: the parent's pending marks are the parent's to write,
        # and a lock held at the fork would never be released here.
        self._wake = threading.Condition()
        # Held for a whole write: a flush at exit waits for the thread's write in progress,
        # which the interpreter would otherwise cut off (the thread is a daemon).
        self._writing = threading.Lock()
        self._pending: list[Outcome] = []
        self._thread: threading.Thread | None = None
        self._batch_seconds = 0.0

    def defer(self, outcomes: Sequence[Outcome], batch_seconds: float) -> None:
        """Mark these rows dispatched within ``batch_seconds``, together with the others gathered meanwhile."""
        with self._wake:
            self._pending.extend(outcomes)
            self._batch_seconds = batch_seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="eventbus-marks", daemon=True)
                self._thread.start()
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._pending)

    def flush(self) -> int:
        """Write every mark gathered so far, in one transaction; returns how many rows it marked.

        A failure is logged and loses nothing: the rows stay pending, and the
        relay sends them again after its grace.
        """
        with self._writing:
            with self._wake:
                outcomes, self._pending = self._pending, []
            if not outcomes:
                return 0
            try:
                with transaction.atomic():
                    dispatch.settle(outcomes)
            except Exception:
                log.exception(
                    "could not mark %d sent events dispatched; the relay will send them again after its grace",
                    len(outcomes),
                )
                connection.close()  # this thread's; the next flush opens a fresh one
                return 0
            return len(outcomes)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                wait = self._batch_seconds
            # Gather: the requests of the next ``wait`` seconds share this transaction.
            time.sleep(wait)
            # As Django does before each request: a connection past its age or broken is replaced.
            close_old_connections()
            self.flush()


MARKER = Marker()

os.register_at_fork(after_in_child=MARKER._reset)
atexit.register(MARKER.flush)


@worker_process_shutdown.connect
def _flush_on_pool_process_shutdown(**_: object) -> None:
    # A Celery pool process ends with os._exit, which runs no atexit hook.
    MARKER.flush()
