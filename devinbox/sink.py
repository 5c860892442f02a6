"""A real SMTP server that keeps what it receives: the development and test mail sink.

Each message is stored as one ``.eml`` file (written to a temporary name, then
renamed, so a reader never sees half a message) and kept in memory with the
time it arrived. The run command starts one for the dev inbox; tests start
their own on a free port.

Fault tests can make it refuse for a while, as a provider in trouble does:
``sink.refuse("MAIL")`` (or ``"RCPT"``, ``"DATA"``) answers 451 to that
command until ``sink.accept()``; ``sink.refuse("RCPT", "550 5.1.1 no such
user", times=1)`` answers the reply of one's choice to the next ``times`` of
them only; ``sink.refusals`` counts the refused commands. ``sink.pipelining =
False`` stops offering PIPELINING, so that clients talk one command at a time.

Given ``faults`` (devinbox/faults.py: what `make run`'s sink is given), it also
plays the failures a person causes from the ops page: special addresses
refused for good, refused for a while or taken slowly, and the provider down
for a while. The refusals a test asks for come first.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

if TYPE_CHECKING:
    from devinbox.faults import SinkFaults


@dataclass(frozen=True)
class Received:
    at: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return str(self.message()["Message-ID"] or "")


REFUSAL = "451 4.3.0 Temporarily unable to accept mail, try again later"
"""A transient refusal: smtplib raises it as an SMTPResponseException with code 451."""

REFUSABLE = ("MAIL", "RCPT", "DATA")


@dataclass
class Refusal:
    """Answer ``reply`` to ``command``, ``left`` more times (None: until told to accept)."""

    command: str
    reply: str
    left: int | None


class SinkHandler:
    def __init__(self, directory: Path | None = None, faults: SinkFaults | None = None) -> None:
        self.directory = directory
        self.faults = faults
        self.received: list[Received] = []
        self.connections = 0
        # The command refused, and how; None accepts all.
        self.refusing: Refusal | None = None
        self.refusals = 0
        self.pipelining = True
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def _refusal(self, command: str) -> str | None:
        """The reply to refuse ``command`` with now, or None to take it."""
        with self._lock:
            refusal = self.refusing
            if refusal is None or refusal.command != command:
                return None
            self.refusals += 1
            if refusal.left is not None:
                refusal.left -= 1
                if refusal.left <= 0:
                    self.refusing = None
            return refusal.reply

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's own EHLO reply, plus PIPELINING (RFC 2920), as real providers offer it.

        aiosmtpd reads commands one line at a time, so it answers pipelined
        ones in order; saying so lets clients send MAIL, RCPT and DATA in one
        write (notifications/pipelining.py).
        """
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        refusal = self._refusal("MAIL") or (self.faults.mail_reply() if self.faults else None)
        if refusal is not None:
            return refusal
        # What aiosmtpd does itself when a handler has no handle_MAIL.
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self._refusal("RCPT") or (self.faults.rcpt_reply(address) if self.faults else None)
        if refusal is not None:
            return refusal
        # What aiosmtpd does itself when a handler has no handle_RCPT.
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        refusal = self._refusal("DATA")
        if refusal is not None:
            return refusal
        delay = self.faults.data_delay(envelope.rcpt_tos) if self.faults else 0.0
        if delay:
            await asyncio.sleep(delay)
        raw: bytes = envelope.original_content or envelope.content
        item = Received(time.time(), envelope.mail_from, tuple(envelope.rcpt_tos), raw)
        if self.directory is not None:
            name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(raw)
            os.replace(tmp, self.directory / name)
        with self._lock:
            self.received.append(item)
        return "250 Message accepted for delivery"


class _CountingSMTP(SMTP):
    def connection_made(self, transport: Any) -> None:
        handler: SinkHandler = self.event_handler
        with handler._lock:
            handler.connections += 1
        super().connection_made(transport)


class SmtpSink(Controller):
    """``with SmtpSink(port=0) as sink: ...`` runs a sink in a thread; ``sink.port`` is where."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, directory: Path | None = None, faults: SinkFaults | None = None
    ) -> None:
        self.handler = SinkHandler(directory, faults)
        if port == 0:
            port = free_port(host)
        super().__init__(self.handler, hostname=host, port=port, ready_timeout=10)

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, hostname="sink.local", **self.SMTP_kwargs)

    @property
    def messages(self) -> list[Received]:
        with self.handler._lock:
            return list(self.handler.received)

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def refusals(self) -> int:
        """Commands refused (see :meth:`refuse`)."""
        return self.handler.refusals

    def refuse(self, command: str = "MAIL", reply: str = REFUSAL, times: int | None = None) -> None:
        """Answer ``reply`` to ``command`` ("MAIL", "RCPT" or "DATA"): the next ``times`` ones, or all until
        :meth:`accept`. ``reply`` is a 4yz or 5yz code and its text."""
        if command not in REFUSABLE:
            raise ValueError(f"can refuse {', '.join(REFUSABLE)}, not {command!r}")
        if not (reply[:1] in ("4", "5") and reply[:3].isdigit() and reply[3:4] == " "):
            raise ValueError(f"a refusal is a 4yz or 5yz code and a text, not {reply!r}")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 (or None for until accept()), not {times}")
        with self.handler._lock:
            self.handler.refusing = Refusal(command, reply, times)

    @property
    def pipelining(self) -> bool:
        """Whether the EHLO reply offers PIPELINING (it does by default)."""
        return self.handler.pipelining

    @pipelining.setter
    def pipelining(self, offered: bool) -> None:
        self.handler.pipelining = offered

    def accept(self) -> None:
        """Stop refusing: take mail again."""
        with self.handler._lock:
            self.handler.refusing = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
