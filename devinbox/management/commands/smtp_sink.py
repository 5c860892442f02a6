"""``manage.py smtp_sink``: a local SMTP server that stores every message for the dev inbox."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from devinbox.sink import SmtpSink


class Command(BaseCommand):
    help = "Run an SMTP server that keeps every message it receives (for development)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.EMAIL_PORT)
        parser.add_argument("--dir", default=str(settings.DEVINBOX_DIR))

    def handle(self, *args: Any, host: str, port: int, dir: str, **options: Any) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        with SmtpSink(host=host, port=port, directory=Path(dir)):
            self.stdout.write(f"SMTP sink listening on {host}:{port}, storing mail in {dir}")
            self.stdout.flush()
            stop.wait()
