"""What a demo prints: timestamped lines as things happen, and one verdict line at the end.

The verdict line has a fixed shape that tests and scripts read::

    verdict: PASS fanout — 1 event, 2 messages, 2 ledger rows, 1 email

``PASS`` or ``FAIL``, the demo's name, an em dash, then the numbers.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import TextIO

VERDICT = re.compile(r"^verdict: (?P<outcome>PASS|FAIL) (?P<demo>[a-z]+) — (?P<summary>.+)$", re.MULTILINE)
"""The verdict line, as tests parse it."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str

    def line(self, demo: str) -> str:
        return f"verdict: {'PASS' if self.passed else 'FAIL'} {demo} — {self.summary}"


def check(summary: str, *conditions: bool) -> Verdict:
    """PASS when every condition holds; the summary states the numbers either way."""
    return Verdict(all(conditions), summary)


class Narrator:
    """Prints ``[+1.23s] text`` lines, flushed at once so that a pipe shows them as they happen."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        self.out.write(f"[+{self.elapsed():5.2f}s] {text}\n")
        self.out.flush()

    def verdict(self, demo: str, verdict: Verdict) -> None:
        self.out.write(verdict.line(demo) + "\n")
        self.out.flush()
