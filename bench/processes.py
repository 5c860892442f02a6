"""Starting and stopping the processes a benchmark needs, always bounded.

Every child runs in a session (and so a process group) of its own: stopping it
ends with the whole group, which takes a prefork worker's pool processes along.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` every ``interval`` seconds; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: be SIGKILLed when the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the repository, in a process group of its own; output goes to ``log``."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 -- the child keeps it
    try:
        return subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=dict(env),
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the benchmark process starts no threads
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """SIGTERM the process (a Celery worker shuts down warm), wait up to ``timeout`` seconds,
    then SIGKILL its whole process group, which also takes pool processes it left behind."""
    pgid = process.pid  # the child leads its own session, so its pid is the group id
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            process.wait(5)
    _signal_group(pgid, signal.SIGKILL)


def redis_version(url: str) -> str:
    return str(redis.Redis.from_url(url, socket_timeout=2).info("server")["redis_version"])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of the benchmark's own on a free port, without persistence; returns it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on the PATH (Debian package redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--save", "", "--appendonly", "no"]
    process = spawn(argv, env=os.environ, log=directory / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {directory / 'redis.log'}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, timeout=10, what=f"redis-server on port {port}", interval=0.05)
    except BaseException:
        stop(process)
        raise
    return process, url
