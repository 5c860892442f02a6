"""``manage.py add_device NAME``: register a device and print its API token, once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from telemetry import tokens
from telemetry.models import Device


class Command(BaseCommand):
    help = "Register a device for /api/v1/readings and print its API token (shown once; only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--rotate", action="store_true", help="issue a new token for an existing device")

    def handle(self, *args: Any, name: str, rotate: bool, **options: Any) -> None:
        existing = Device.objects.filter(name=name).first()
        if existing is not None and not rotate:
            raise CommandError(f"device {name!r} exists; --rotate issues it a new token")
        if existing is None and rotate:
            raise CommandError(f"no device {name!r} to rotate")
        token = tokens.rotate(existing) if existing is not None else tokens.register(name)[1]
        self.stdout.write(f"device {name}: token (shown once, store it on the device):")
        self.stdout.write(token)
