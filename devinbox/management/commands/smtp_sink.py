"""``manage.py smtp_sink``: a local SMTP server that stores every message for the dev inbox.

With DJANGO_DEBUG on it also plays the failures of devinbox/faults.py (special
addresses, the provider down for a while), which the ops page's failure panel causes.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from devinbox.faults import SinkFaults
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
        faults = SinkFaults() if settings.DEBUG else None
        with SmtpSink(host=host, port=port, directory=Path(dir), faults=faults):
            played = "; plays the failure panel's failures (DJANGO_DEBUG on)" if faults else ""
            self.stdout.write(f"SMTP sink listening on {host}:{port}, storing mail in {dir}{played}")
            self.stdout.flush()
            stop.wait()
