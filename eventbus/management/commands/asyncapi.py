"""``manage.py asyncapi``: the AsyncAPI 3.0 document of the event catalogue, printed, written or checked.

``--check FILE`` exits 1 with a unified diff when FILE is not what the code
generates today: the checked-in copy (docs/asyncapi.json in this project) is
what a reviewer diffs between two commits, so it must never lag the code.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventbus.contract.asyncapi import document, render


class Command(BaseCommand):
    help = "Print the AsyncAPI 3.0 document of the event catalogue, write it to a file, or check a file is current."

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--output", metavar="FILE", help="write the document to FILE instead of printing it")
        where.add_argument("--check", metavar="FILE", help="exit 1 with a diff when FILE differs from the document")

    def handle(self, *args: Any, output: str | None, check: str | None, **options: Any) -> None:
        text = render(document())
        if check is not None:
            stale = stale_diff(Path(check), text)
            if stale:
                raise CommandError(
                    f"{check} is not the current document; rewrite it with "
                    f"`manage.py asyncapi --output {check}`:\n{stale}"
                )
            self.stdout.write(f"{check} is current")
        elif output is not None:
            Path(output).write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")


def stale_diff(path: Path, text: str) -> str:
    """The unified diff from ``path``'s content (none if it is missing) to ``text``; empty when they match."""
    written = path.read_text(encoding="utf-8") if path.exists() else ""
    return "".join(
        difflib.unified_diff(written.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "generated")
    )
