"""``manage.py demo <name>``: watch one pattern of the event bus happen (docs/patterns.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lab import demos
from lab.launcher import launch
from lab.narration import Narrator, Verdict
from lab.stage import DemoTimeout, Stage


class Command(BaseCommand):
    help = "Run a live demonstration of one event-driven pattern on a Redis, workers and a database of its own."

    # The system checks would run twice (outer and inner process) for nothing.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="the demo to run; --list shows them")
        parser.add_argument("--list", action="store_true", dest="list_demos", help="list the demos and what each shows")
        parser.add_argument("--keep", action="store_true", help="keep the demo's database, Redis data and logs")
        # The demo's own process, started by the launcher with the demo's environment.
        parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args: Any, name: str | None, list_demos: bool, keep: bool, inside: bool, **options: Any) -> None:
        if list_demos or not name:
            width = max(len(n) for n in demos.NAMES)
            for demo in demos.NAMES:
                self.stdout.write(f"{demo:<{width}}  {demos.load(demo).SUMMARY}")
            if not list_demos:
                self.stdout.write("\nrun one: manage.py demo <name>   (docs/patterns.md explains each)")
            return
        try:
            module = demos.load(name)
        except KeyError:
            raise CommandError(f"no demo {name!r}; these exist: {', '.join(demos.NAMES)}") from None
        if inside:
            status = run_inside(name, module)
        else:
            self.stdout.flush()
            status = launch(name, dict(getattr(module, "ENV", {})), keep, say=self._say)
        if status:
            sys.exit(status)

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()


def run_inside(name: str, module: Any) -> int:
    """Run the demo on its stage; prints the verdict line; 0 for PASS, 1 for FAIL."""
    narrator = Narrator()
    # SIGTERM stops the demo as Ctrl-C does: through the stage's cleanup.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    narrator.say(f"{name}: {module.SUMMARY}")
    try:
        with Stage(name, narrator) as stage:
            verdict: Verdict = module.run(stage)
    except KeyboardInterrupt:
        verdict = Verdict(False, "interrupted; everything it started is stopped")
    except DemoTimeout as exc:
        verdict = Verdict(False, str(exc))
    except Exception as exc:
        traceback.print_exc()
        verdict = Verdict(False, f"{type(exc).__name__}: {exc}")
    narrator.verdict(name, verdict)
    return 0 if verdict.passed else 1
