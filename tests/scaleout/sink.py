"""The email provider of the scale-out test: one mailbox, listening on each host's root-side address.

One ``SinkHandler`` (devinbox's) keeps every message; one aiosmtpd controller per
address feeds it, so that the sink listens only where the test's namespaces reach
it and nowhere else. ``latency`` makes the provider slow *before* it accepts
anything (it waits before answering MAIL FROM), and ``waiting`` says which client
addresses are inside that wait: a host cut off there has sent nothing the provider
kept, so the redelivery elsewhere is the only copy.

(A wait in DATA instead, after the message is complete, is docs/reliability.md's "one
window left": the provider keeps the message, the cut host never hears the 250,
and the redelivery sends a second copy with the same Message-ID.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP

from devinbox.sink import Received, SinkHandler, SmtpSink


class SlowProviderHandler(SinkHandler):
    def __init__(self) -> None:
        super().__init__()
        self.latency = 0.0
        # When each send now inside the latency entered it, by client address.
        self._waiting: dict[str, list[float]] = {}
        self._waiting_lock = threading.Lock()
        # The most sends inside the latency at one time, from all clients together.
        self.peak = 0

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.latency:
            peer = str(session.peer[0])
            entered = time.monotonic()
            with self._waiting_lock:
                self._waiting.setdefault(peer, []).append(entered)
                self.peak = max(self.peak, sum(len(sends) for sends in self._waiting.values()))
            try:
                await asyncio.sleep(self.latency)
            finally:
                with self._waiting_lock:
                    self._waiting[peer].remove(entered)
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    def waiting(self, peer: str, *, for_at_least: float = 0.0) -> int:
        """Sends from ``peer`` inside the latency right now (nothing accepted from them yet), counting only
        those with ``for_at_least`` seconds of it still ahead."""
        latest_entry = time.monotonic() - (self.latency - for_at_least)
        with self._waiting_lock:
            return sum(1 for entered in self._waiting.get(peer, ()) if entered > latest_entry)


class _Listener(SmtpSink):
    """devinbox's SmtpSink on one address, feeding a shared handler."""

    def __init__(self, host: str, handler: SlowProviderHandler) -> None:
        super().__init__(host=host, port=0)
        self.handler = handler


class ProviderSink:
    """``with ProviderSink([addr, ...]) as sink``: ``sink.port_for(addr)`` is where each host sends."""

    def __init__(self, addresses: list[str]) -> None:
        self.handler = SlowProviderHandler()
        self.listeners = {address: _Listener(address, self.handler) for address in addresses}
        self._mail_log = logging.getLogger("mail.log")
        self._mail_log_level = self._mail_log.level

    def port_for(self, address: str) -> int:
        return int(self.listeners[address].port)

    @property
    def messages(self) -> list[Received]:
        with self.handler._lock:
            return list(self.handler.received)

    @property
    def latency(self) -> float:
        return self.handler.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.handler.latency = seconds

    def __enter__(self) -> ProviderSink:
        # aiosmtpd logs every SMTP command at INFO: hundreds of lines, none of them news.
        self._mail_log.setLevel(logging.WARNING)
        started: list[_Listener] = []
        try:
            for listener in self.listeners.values():
                listener.start()
                started.append(listener)
        except BaseException:
            for listener in started:
                listener.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for listener in self.listeners.values():
            try:
                listener.stop()
            except Exception as error:  # a listener that never started, or is stuck: the others still stop
                print(f"SMTP listener {listener.hostname}: {error}")
        self._mail_log.setLevel(self._mail_log_level)
