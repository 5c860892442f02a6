"""An SMTP provider that takes its time: the dev sink, with latency before it accepts anything.

A test can slow sends down (a provider under load) and learn which sends are
inside that latency, to kill their process mid-send and know the provider took
nothing yet. It can also hold its reply to DATA (the message received, the
client waiting for the verdict) until the test lets it go, and says when each
message's DATA came in and was answered: a test can then do something while a
send is provably under way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from devinbox.sink import Received, SinkHandler, SmtpSink
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
        self.gate = threading.Event()
        """Open (set): DATA is answered at once. Closed: the reply to DATA waits (see ``ProviderSink.hold_data``)."""
        self.gate.set()
        self.hold_limit = 0.0
        self.data_begun: list[tuple[str, float]] = []
        """(Message-ID, time.monotonic()) of every message whose DATA the provider received, in order."""
        self.data_answered: list[tuple[str, float]] = []
        """(Message-ID, time.monotonic()) of every DATA reply sent, in order."""

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

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        """The message is in; while the gate is closed the reply waits (the client is inside its send)."""
        message_id = Received(0.0, "", (), envelope.original_content or envelope.content).message_id
        self.data_begun.append((message_id, time.monotonic()))
        # Bounded: a test that forgets to open the gate gets a late reply, never a hung sink.
        until = time.monotonic() + self.hold_limit
        while not self.gate.is_set() and time.monotonic() < until:
            await asyncio.sleep(0.01)
        reply = await super().handle_DATA(server, session, envelope)
        self.data_answered.append((message_id, time.monotonic()))
        return reply


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

    def hold_data(self, at_most: float) -> None:
        """Hold every reply to DATA (the message received, not yet accepted) until :meth:`answer_data`,
        or for ``at_most`` seconds: the client stays inside its send as long as the test needs."""
        self.handler.hold_limit = at_most
        self.handler.gate.clear()

    def answer_data(self) -> None:
        """Answer the held DATA commands, and every later one at once."""
        self.handler.gate.set()

    def data_begun(self, message_id: str) -> list[float]:
        """When (time.monotonic()) the provider received each message with ``message_id``."""
        return [at for mid, at in list(self.handler.data_begun) if mid == message_id]

    def data_answered(self, message_id: str) -> list[float]:
        """When (time.monotonic()) the provider answered each DATA of a message with ``message_id``."""
        return [at for mid, at in list(self.handler.data_answered) if mid == message_id]

    def sending_from(self, at_least: float = 0.0) -> set[int]:
        """Client ports of the sends inside the latency, with at least ``at_least`` seconds of it left."""
        now = time.monotonic()
        return {port for port, ends in dict(self.handler.waiting).items() if ends - now >= at_least}

    def abandoned_before_accepting(self, port: int, timeout: float = 5) -> bool:
        """Whether the client on ``port`` went away inside the latency (waits until the sink knows)."""
        wait_for(lambda: port not in self.handler.waiting, timeout=timeout, what=f"the sink done with port {port}")
        return port in self.handler.abandoned
