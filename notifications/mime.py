"""A plain-and-HTML email as bytes, built from a fixed frame instead of Python's email package.

Django's ``EmailMultiAlternatives`` builds a tree of MIME objects, checks and
folds every header, and serializes it all with ``email.generator``: about
0.5 ms of a worker's time per welcome email on the project's machine, more
than rendering both templates and signing the link together (figure 1 of
docs/benchmarks.md). The welcome email is always the same shape: a handful
of ASCII headers and two short bodies. For that shape this writes the bytes
that Django's message serializes to (the same headers, parts, charsets and
transfer encoding: tests/notifications/test_welcome_email_mime.py parses both and compares
them), straight from strings.

Anything outside that shape returns None and the caller takes Django's path,
which encodes it properly: a header or body that is not ASCII, a header with
a line break in it (header injection), a body line longer than SMTP's 998
characters.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from email.utils import formatdate

#: SMTP's limit on a line, without its CRLF (RFC 5321 4.5.3.1.6).
MAX_LINE = 998


def alternative(
    subject: str,
    from_email: str,
    to: str,
    text: str,
    html: str,
    headers: Mapping[str, str],
    *,
    localtime: bool = False,
) -> bytes | None:
    """The message Django's EmailMultiAlternatives(subject, text, from_email, [to], headers=headers) with an
    ``html`` alternative sends, as CRLF bytes; None when it is not plain ASCII (see the module's docstring)."""
    fields = [("Subject", subject), ("From", from_email), ("To", to), ("Date", formatdate(localtime=localtime))]
    fields += [(name, value) for name, value in headers.items() if name.lower() not in {"subject", "from", "to"}]
    if not all(_plain_header(name) and _plain_header(value) for name, value in fields):
        return None
    parts = [_body(text), _body(html)]
    if any(part is None for part in parts):
        return None
    boundary = _boundary(parts)
    # Folded as the email package folds it.
    head = ["Content-Type: multipart/alternative;", f' boundary="{boundary}"', "MIME-Version: 1.0"]
    head += [f"{name}: {value}" for name, value in fields]
    lines = [*head, ""]
    for subtype, part in zip(("plain", "html"), parts, strict=True):
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "MIME-Version: 1.0",
            "Content-Transfer-Encoding: 7bit",
            "",
            str(part),
        ]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("ascii")


def _plain_header(value: str) -> bool:
    return value.isascii() and "\r" not in value and "\n" not in value and len(value) < MAX_LINE - 80


def _body(text: str) -> str | None:
    """The body with CRLF line ends, or None when 7bit cannot carry it (non-ASCII, a line too long)."""
    if not text.isascii():
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if any(len(line) > MAX_LINE for line in lines):
        return None
    # As the email package writes a part: its text as it is, the line break
    # before the next boundary belonging to the boundary.
    return "\r\n".join(lines)


def _boundary(parts: list[str | None]) -> str:
    while True:
        boundary = f"==============={uuid.uuid4().hex}=="
        if not any(boundary in str(part) for part in parts):
            return boundary
