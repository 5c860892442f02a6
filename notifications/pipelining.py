"""``smtplib.SMTP.sendmail`` with SMTP pipelining (RFC 2920): two round trips a message instead of four.

A message sent the plain way is four exchanges with the server: MAIL FROM,
RCPT TO, DATA, then the message itself, each waiting for its answer. A server
that offers PIPELINING in its EHLO reply (Postfix, Exim and the big
providers' submission servers do) takes MAIL FROM, RCPT TO and DATA in one
write and answers them in order; only the message must wait for DATA's 354.
Over a real network that is two round trips of tens of milliseconds saved per
email; on one machine, two wake-ups of each side (figure 1 of
docs/benchmarks.md).

The outcome is ``sendmail``'s: the same commands and options (SIZE when
offered), the same exceptions for the same answers (``SMTPSenderRefused``,
``SMTPRecipientsRefused``, ``SMTPDataError``), RSET after a refusal, and the
connection closed after a 421. A server without PIPELINING gets plain
``sendmail``. What each answer means for the email (retry or dead letter, by
its code) is decided in one place for both paths: notifications/replies.py.
"""

from __future__ import annotations

import re
import smtplib

CRLF = b"\r\n"

Refusals = dict[str, tuple[int, bytes]]
"""smtplib's refused recipients: address -> (code, the server's text)."""


def sendmail(smtp: smtplib.SMTP, from_addr: str, to_addrs: list[str], msg: bytes) -> Refusals:
    """Send ``msg`` as ``smtp.sendmail`` would; returns the refused recipients, as it does."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("pipelining"):
        return smtp.sendmail(from_addr, to_addrs, msg)
    options = f" SIZE={len(msg)}" if smtp.has_extn("size") else ""
    commands = [f"mail FROM:{smtplib.quoteaddr(from_addr)}{options}"]
    commands += [f"rcpt TO:{smtplib.quoteaddr(address)}" for address in to_addrs]
    commands.append("data")
    for command in commands:
        if "\r" in command or "\n" in command:
            raise ValueError(f"command and arguments contain prohibited newline characters: {command!r}")
    smtp.send("".join(command + "\r\n" for command in commands))
    # Every answer is read, in order, before anything is decided: the server
    # answers each pipelined command, refused or not.
    mail = smtp.getreply()
    rcpts = [smtp.getreply() for _ in to_addrs]
    data = smtp.getreply()
    refused = {address: reply for address, reply in zip(to_addrs, rcpts, strict=True) if reply[0] not in (250, 251)}
    failure: Exception | None = None
    if mail[0] != 250:
        failure = smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
    elif any(code == 421 for code, _ in rcpts) or len(refused) == len(to_addrs):
        failure = smtplib.SMTPRecipientsRefused(refused)
    elif data[0] != 354:
        failure = smtplib.SMTPDataError(data[0], data[1])
    if failure is not None:
        if data[0] == 354:
            # The server wants a message after all: an empty one ends it, and RSET drops it.
            smtp.send(b"." + CRLF)
            smtp.getreply()
        _abandon(smtp, closed=any(code == 421 for code, _ in (mail, *rcpts, data)))
        raise failure
    code, reply = _message(smtp, msg)
    if code != 250:
        _abandon(smtp, closed=code == 421)
        raise smtplib.SMTPDataError(code, reply)
    return refused


def _message(smtp: smtplib.SMTP, msg: bytes) -> tuple[int, bytes]:
    """The message after DATA's 354, dot-stuffed and ended as ``smtplib.SMTP.data`` does."""
    quoted = re.sub(rb"(?m)^\.", b"..", msg)
    if quoted[-2:] != CRLF:
        quoted += CRLF
    smtp.send(quoted + b"." + CRLF)
    return smtp.getreply()


def _abandon(smtp: smtplib.SMTP, *, closed: bool) -> None:
    """After a refusal: close on 421 (the server is going away), else RSET, as ``sendmail`` does."""
    if closed:
        smtp.close()
    else:
        smtp._rset()  # smtplib's own: RSET, ignoring a server that went away meanwhile
