"""Reading what the SMTP sink stored, for the dev inbox pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

_NAME = re.compile(r"^\d+-[0-9a-f]{8}\.eml$")


@dataclass(frozen=True)
class StoredMail:
    name: str
    received_at: datetime
    subject: str
    to: str
    sender: str
    message_id: str
    text: str
    html: str


def _read(path: Path) -> StoredMail:
    message: EmailMessage = message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[assignment]
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return StoredMail(
        name=path.name,
        received_at=datetime.fromtimestamp(int(path.name.split("-")[0]) / 1e9, tz=UTC),
        subject=str(message["Subject"] or ""),
        to=str(message["To"] or ""),
        sender=str(message["From"] or ""),
        message_id=str(message["Message-ID"] or ""),
        text=text_part.get_content() if text_part else "",
        html=html_part.get_content() if html_part else "",
    )


def list_mail(directory: Path, limit: int = 200) -> list[StoredMail]:
    if not directory.is_dir():
        return []
    names = sorted((p for p in directory.iterdir() if _NAME.match(p.name)), reverse=True)[:limit]
    return [_read(p) for p in names]


def get_mail(directory: Path, name: str) -> StoredMail | None:
    # Only names the sink writes: a request can never read another file.
    if not _NAME.match(name):
        return None
    path = directory / name
    return _read(path) if path.is_file() else None
