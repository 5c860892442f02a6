"""Runs processes side by side, each in its own process group, and stops them as one.

Output of each process is written line by line, prefixed with its name. A stop
(a signal, or a process that ended on its own) sends SIGTERM to each process,
waits up to STOP_GRACE seconds, then SIGKILLs its whole group. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

STOP_GRACE = 10.0
"""Seconds a process has to stop after SIGTERM before its group gets SIGKILL."""
STARTUP_TIMEOUT = 60.0
LAST = "redis"
"""Stopped after the others, so that they can finish against it."""
COLORS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)


class StartupError(Exception):
    """The system cannot start; the message says why and what to change."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived."""


class ChildDied(Exception):
    """A long-running process ended on its own."""


class Output:
    """Writes lines as ``name | text``, one whole line at a time, from any thread."""

    def __init__(self, names: Iterable[str]) -> None:
        self.width = max(len(n) for n in names)
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.colors: dict[str, int] = {}
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        label = name.ljust(self.width)
        if self.color:
            code = self.colors.setdefault(name, COLORS[len(self.colors) % len(COLORS)])
            label = f"\033[{code}m{label}\033[0m"
        with self.lock:
            try:
                sys.stdout.write(f"{label} | {text}\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread
    ready: threading.Event
    """Set when the process printed its ready line."""
    oneshot: bool = False
    code: int | None = field(default=None)

    def exited(self) -> bool:
        """Whether the process ended, without reaping it: a zombie keeps its group id from reuse."""
        if self.code is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def reap(self) -> int:
        """SIGKILL what is left of the group, then collect the exit status."""
        if self.code is None:
            self.signal_group(signal.SIGKILL)
            self.code = self.process.wait()
            self.pump.join(timeout=2)
        return self.code


class Supervisor:
    def __init__(self, output: Output, cwd: Path) -> None:
        self.output = output
        self.cwd = cwd
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()

    def say(self, text: str) -> None:
        self.output.line("run", text)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, oneshot: bool = False, ready_text: str = ""
    ) -> Child:
        process = subprocess.Popen(
            list(argv),
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the terminal's Ctrl-C reaches only us
        )
        stream = process.stdout
        assert stream is not None
        ready = threading.Event()

        def pump() -> None:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if ready_text and ready_text in text:
                    ready.set()
                self.output.line(name, text)

        thread = threading.Thread(target=pump, name=f"pump-{name}", daemon=True)
        thread.start()
        child = Child(name, process, thread, ready, oneshot)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise if a stop was asked for or a long-running process ended."""
        if self.stop_requested.is_set():
            raise StopRequested
        for child in self.children:
            if not child.oneshot and child.exited():
                raise ChildDied(f"{child.name} exited unexpectedly (code {child.reap()})")

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        if not self.wait_quietly(ready, timeout):
            raise StartupError(f"{what} did not happen within {timeout:g} s")

    def wait_quietly(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Whether ``ready()`` came true within ``timeout``; raises on a stop or a dead process."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def run_once(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        child = self.start(name, argv, env, oneshot=True)
        self.wait_for(child.exited, f"{name} to finish", timeout=600)
        if child.reap() != 0:
            raise StartupError(f"{name} failed with exit code {child.code}")

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()  # a second Ctrl-C: no more waiting
        self.stop_requested.set()

    def stop_all(self) -> None:
        """SIGTERM each process, Redis last; SIGKILL the groups of those still there after STOP_GRACE."""
        running = [c for c in self.children if c.code is None]
        if not running:
            return
        later = [c for c in running if c.name == LAST]
        first = [c for c in running if c not in later]
        self.say("stopping " + ", ".join(c.name for c in first + later))
        for batch in (first, later):
            for child in batch:
                if not child.exited():
                    # The leader only: a Celery worker then finishes its tasks and stops its pool itself.
                    # (os.kill, not Popen.send_signal, which would reap the leader and free its group id.)
                    os.kill(child.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while not all(c.exited() for c in batch) and time.monotonic() < deadline and not self.hurry.is_set():
                time.sleep(0.1)
            for child in batch:
                if not child.exited():
                    self.say(f"{child.name} did not stop within {STOP_GRACE:g} s: SIGKILL")
                child.reap()
        self.say("all stopped")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
