"""What Linux's /proc says about the benchmark's children: their children, resident size, CPU time."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (all its threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return sorted(set(found))


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` in KiB (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its direct children (a gunicorn master and its workers)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except FileNotFoundError:
            continue
    return total


def wait_quiet(pid: int, *, timeout: float, quiet_for: float = 1.0, idle_cpu: float = 0.03) -> None:
    """Wait until ``pid`` and its children used at most ``idle_cpu`` CPU seconds in ``quiet_for`` seconds."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(pid)
    while True:
        time.sleep(quiet_for)
        now = tree_cpu_seconds(pid)
        if now - last <= idle_cpu:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} and its children still busy after {timeout:g}s")
        last = now
