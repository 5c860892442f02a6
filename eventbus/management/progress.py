"""A progress bar for long management commands, standard library only.

On a terminal it redraws one line in place (at most every ``min_interval``
seconds, and once more at the end); anywhere else (a pipe, a log file, a
test's StringIO) it draws nothing and prints only the final summary line, so
logs and scripts see the same output as before. Usage::

    bar = ProgressBar(total, label="relay", stream=self.stdout)
    relay(progress=bar.advance)
    bar.finish(f"dispatched {result.dispatched} ...")

``stream`` is a text stream or Django's ``OutputWrapper`` (``self.stdout`` of
a command): anything with ``write`` and, for drawing, ``isatty()`` true.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

BAR_WIDTH = 30
# Ten redraws a second look smooth and cost nothing next to the work measured.
MIN_INTERVAL = 0.1


class Stream(Protocol):
    def write(self, text: str, /) -> Any: ...


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class ProgressBar:
    """Counts work done against an expected ``total`` (None: unknown) and shows it on a terminal.

    Guarantees: nothing but the summary is written when the stream is not a
    terminal; on a terminal the bar's line is erased before the summary, so
    the summary reads the same either way. ``advance`` is cheap when no
    redraw is due. ``total`` may be an estimate: a count above it raises it.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str,
        stream: Stream,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream
        self._min_interval = min_interval
        self._clock = clock
        self._started = clock()
        self._drawn_at: float | None = None
        self._finished = False
        self.tty = _isatty(stream) if tty is None else tty

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units done; redraws when the last drawing is older than ``min_interval``."""
        self.done += amount
        if self.total is not None and self.done > self.total:
            self.total = self.done
        if not self.tty or self._finished:
            return
        now = self._clock()
        if self._drawn_at is None or now - self._drawn_at >= self._min_interval:
            self._draw(now)

    def finish(self, summary: str | None = None) -> None:
        """End the bar and write ``summary`` (default: what was done, and how long it took) on its own line."""
        if self._finished:
            return
        self._finished = True
        if self.tty and self._drawn_at is not None:
            self._write("\r\x1b[K")
        self._write((summary if summary is not None else self.default_summary()) + "\n")

    def default_summary(self) -> str:
        of = f" of {self.total}" if self.total is not None else ""
        return f"{self.label}: {self.done}{of} in {self._clock() - self._started:.1f}s"

    def line(self, now: float | None = None) -> str:
        """What the bar shows, e.g. ``relay [##########----------] 50/100  50%  12.5/s  eta 4s``."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = int(fraction * BAR_WIDTH)
            parts.append(f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{self.total} {fraction:4.0%}")
            if rate > 0 and self.done < self.total:
                parts.append(f"eta {(self.total - self.done) / rate:.0f}s")
        else:
            parts.append(f"{self.done} done")
        parts.append(f"{rate:.1f}/s")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        columns = shutil.get_terminal_size((80, 24)).columns
        # One column short of the width: a full line would wrap on some terminals.
        self._write("\r" + self.line(now)[: max(columns - 1, 10)] + "\x1b[K")
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()

    def _write(self, text: str) -> None:
        if getattr(self._stream, "ending", None) is not None:
            # Django's OutputWrapper appends its ending ("\n") unless told otherwise.
            self._stream.write(text, ending="")  # type: ignore[call-arg]
        else:
            self._stream.write(text)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # An error leaves the bar's line as it is and moves on, so the traceback starts on a line of its own.
        if exc_type is not None and self.tty and self._drawn_at is not None and not self._finished:
            self._finished = True
            self._write("\n")
