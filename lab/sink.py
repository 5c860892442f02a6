"""The demos' email provider: the dev SMTP sink, with the faults a real provider has.

``refuse_next(n)`` answers 451 (try again later) to the next ``n`` MAIL
commands, ``sink.refuse()``/``accept()`` (from devinbox.sink) refuses until
told otherwise, ``reject_containing`` answers 550 (no such mailbox, a
permanent failure) to recipients whose address holds that text, and
``latency`` holds every send before MAIL is answered (so that a demo can kill
the sender mid-send, before the provider took anything).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from devinbox.sink import REFUSAL, SinkHandler, SmtpSink

REJECTION = "550 5.1.1 Mailbox unavailable"
"""A permanent refusal: smtplib raises SMTPRecipientsRefused, the welcome email a PermanentError."""


class LabHandler(SinkHandler):
    def __init__(self) -> None:
        super().__init__()
        self.refuse_budget = 0
        self.reject_containing: str | None = None
        self.latency = 0.0
        self.in_latency = 0
        """Sends waiting inside the latency right now."""
        self.mail_times: list[float] = []
        """When (time.time()) each MAIL command arrived: one per send attempt that reached the provider."""
        self.data_times: list[float] = []
        """When (time.time()) each message was accepted (its DATA answered)."""

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self._lock:
            self.mail_times.append(time.time())
            budget_refusal = self.refuse_budget > 0
            if budget_refusal:
                self.refuse_budget -= 1
                self.refusals += 1
        if budget_refusal:
            return REFUSAL
        if self.latency:
            self.in_latency += 1
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.in_latency -= 1
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self._lock:
                self.data_times.append(time.time())
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.reject_containing and self.reject_containing in address:
            with self._lock:
                self.refusals += 1
            return REJECTION
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"


class LabSink(SmtpSink):
    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.handler: LabHandler = LabHandler()

    def refuse_next(self, count: int) -> None:
        with self.handler._lock:
            self.handler.refuse_budget = count

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages]
