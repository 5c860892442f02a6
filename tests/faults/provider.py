"""An SMTP provider that takes its time: the dev sink, with latency before it accepts anything.

A test can slow sends down (a provider under load) and learn which sends are
inside that latency, to kill their process mid-send and know the provider took
nothing yet.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from devinbox.sink import SinkHandler, SmtpSink
from tests.conftest import wait_for


class ProviderHandler(SinkHandler):
    """The sink's handler, with a provider's latency before it answers MAIL FROM (nothing accepted yet).

    ``waiting`` holds the client ports of the sends inside that latency; ``abandoned``
    those whose client went away during it: a process killed there died mid-send,
    before the provider took anything.
    """

    latency = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, float] = {}
        """Client port -> when (time.monotonic()) its latency ends."""
        self.abandoned: set[int] = set()

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.latency:
            port = int(session.peer[1])
            self.waiting[port] = time.monotonic() + self.latency
            try:
                await asyncio.sleep(self.latency)
            except asyncio.CancelledError:
                # aiosmtpd cancels the handler when the connection is lost.
                self.abandoned.add(port)
                raise
            finally:
                self.waiting.pop(port, None)
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


class ProviderSink(SmtpSink):
    """An SmtpSink whose ``latency`` (seconds, default 0) slows every send down before anything is accepted."""

    def __init__(self) -> None:
        super().__init__(port=0)
        self.handler = ProviderHandler()

    @property
    def latency(self) -> float:
        return self.handler.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.handler.latency = seconds

    def sending_from(self, at_least: float = 0.0) -> set[int]:
        """Client ports of the sends inside the latency, with at least ``at_least`` seconds of it left."""
        now = time.monotonic()
        return {port for port, ends in dict(self.handler.waiting).items() if ends - now >= at_least}

    def abandoned_before_accepting(self, port: int, timeout: float = 5) -> bool:
        """Whether the client on ``port`` went away inside the latency (waits until the sink knows)."""
        wait_for(lambda: port not in self.handler.waiting, timeout=timeout, what=f"the sink done with port {port}")
        return port in self.handler.abandoned
