"""The welcome email's fast build (notifications/mime.py) is the message Django's email framework writes."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from django.core.mail import EmailMultiAlternatives

from notifications import mime

HEADERS = {"Message-ID": "<welcome.1234@example.com>", "X-Event-ID": "1234"}
TEXT = "Welcome!\n\nOpen this link:\n\nhttp://example.com/verify/abc:def/\n\nIf not, ignore it.\n"
HTML = '<!doctype html>\n<html><body><p><a href="http://example.com/verify/abc:def/">Verify</a></p>\n</body></html>\n'


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def django_bytes(subject: str, from_email: str, to: str, text: str, html: str) -> bytes:
    message = EmailMultiAlternatives(subject=subject, body=text, from_email=from_email, to=[to], headers=HEADERS)
    message.attach_alternative(html, "text/html")
    return message.message().as_bytes(linesep="\r\n")


@pytest.mark.parametrize("text", [TEXT, TEXT.rstrip("\n"), "one line", "a\r\nb\r\n\r\n"])
def test_the_fast_message_is_djangos_header_by_header_and_part_by_part(text: str) -> None:
    args = ("Welcome! Please verify your email address", "Event Demo <no-reply@example.com>", "a.user@example.org")
    fast = mime.alternative(*args, text, HTML, HEADERS)
    assert fast is not None
    reference = django_bytes(*args, text, HTML)

    ours, theirs = parsed(fast), parsed(reference)
    skip = {"Content-Type", "Date"}  # the boundary is random; the date is now
    assert [(k, v) for k, v in ours.items() if k not in skip] == [(k, v) for k, v in theirs.items() if k not in skip]
    assert list(ours.keys()) == list(theirs.keys())
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    our_parts, their_parts = list(ours.iter_parts()), list(theirs.iter_parts())
    assert [dict(p.items()) for p in our_parts] == [dict(p.items()) for p in their_parts]
    assert [p.get_content() for p in our_parts] == [p.get_content() for p in their_parts]
    # byte for byte, but for the boundary and the date
    boundary_ours, boundary_theirs = ours.get_boundary(), theirs.get_boundary()
    assert boundary_ours and boundary_theirs
    same = fast.replace(boundary_ours.encode(), b"B").replace(ours["Date"].encode(), b"D")
    assert same == reference.replace(boundary_theirs.encode(), b"B").replace(theirs["Date"].encode(), b"D")
    assert fast.endswith(b"\r\n") and b"\n" not in fast.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "jörg@example.org"),  # an address that needs SMTPUTF8 or encoding
        ("to", "a@example.org\r\nBcc: victim@example.org"),  # header injection
        ("subject", "Willkommen, bitte bestätigen"),
        ("text", "Grüße\n"),
        ("html", "<p>" + "x" * 1200 + "</p>\n"),  # a line longer than SMTP allows
    ],
)
def test_what_the_fast_build_cannot_write_plainly_is_left_to_django(field: str, value: str) -> None:
    kwargs = {"subject": "Welcome", "from_email": "no-reply@example.com", "to": "a@example.org"}
    kwargs |= {"text": TEXT, "html": HTML}
    kwargs[field] = value
    assert (
        mime.alternative(kwargs["subject"], kwargs["from_email"], kwargs["to"], kwargs["text"], kwargs["html"], HEADERS)
        is None
    )
