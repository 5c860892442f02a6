"""Services that hang instead of refusing: a paused ``redis-server`` and a listener that never answers.

And the bounds a request is held to meanwhile, derived from the settings
(liveness bounds, not benchmarks).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import TypeVar

import redis
from django.conf import settings

from tests.conftest import wait_for

T = TypeVar("T")


def request_bound() -> float:
    """The most a request may take while Redis and the broker hang: three times its whole budget.

    The budget is EVENTBUS_PUBLISH_TIMEOUT (half of it per service asked,
    project/settings.py); three times, because the test's own work (a sign-up,
    a database write) runs on a shared, loaded machine.
    """
    return 3 * settings.EVENTBUS_PUBLISH_TIMEOUT


def no_wait_margin() -> float:
    """Less than any request that asked a hung service can take: one socket operation's timeout.

    A request that answers within it did not wait on the network (the fail-fast gate answered).
    """
    return float(settings.EVENTBUS_REQUEST_TIMEOUT)


def pause(url: str, seconds: float) -> None:
    """``CLIENT PAUSE ... ALL`` on the Redis at ``url`` (a test's own, never the shared one).

    Redis refuses nothing meanwhile: it accepts connections and holds every
    command, ``CLIENT UNPAUSE`` included, so the pause ends on its own.
    """
    redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")


def wait_until_answering(url: str, timeout: float) -> None:
    probe = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)

    def answers() -> bool:
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    wait_for(answers, timeout=timeout, interval=0.1, what=f"{url} answering again")


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1, whose ``accept`` wakes up every 0.2 s (to stop)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    return server


class SilentListener:
    """A TCP server that accepts every connection and never sends a byte: a hung Redis, or a
    link that swallows replies. Counts the connections it accepted."""

    def __init__(self) -> None:
        self._server = listening_socket()
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-listener", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._held.append(connection)  # held open, never read from or written to

    def __enter__(self) -> SilentListener:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with self._lock:
            for connection in self._held:
                with suppress(OSError):
                    connection.close()
        self._server.close()


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and how long it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


class ReplySwallowingProxy:
    """A TCP proxy to ``upstream_port`` that, once ``swallow`` is set, still forwards every command
    to the server but drops every reply: the server applies a command whose sender times out
    (an ambiguous send, as when a link loses the reply's packets)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.swallow = threading.Event()
        self._server = listening_socket()
        self.port = self._server.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="swallowing-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                if not (replies and self.swallow.is_set()):
                    target.sendall(chunk)

    def __enter__(self) -> ReplySwallowingProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for sock in self._sockets:
            with suppress(OSError):
                sock.close()
        self._server.close()
