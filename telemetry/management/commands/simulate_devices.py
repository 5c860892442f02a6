"""``manage.py simulate_devices``: many devices streaming readings into a running server, with a progress bar."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventbus import parse_rate
from eventbus.management.progress import ProgressBar
from telemetry.schemas import MAX_READINGS
from telemetry.simulator import Simulation, register


class Command(BaseCommand):
    help = (
        "Simulate devices posting readings to /api/v1/readings of a running server (make run's by default): "
        "accepted, duplicate, throttled and error counts as it goes, a summary at the end."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--devices", type=int, default=20, help="simulated devices (default 20)")
        parser.add_argument("--rate", default="200/s", help="readings per second, all devices together (200/s)")
        parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
        # One message per batch: the bus's cost is per message, so a device
        # that buffers a few seconds of readings costs it far less.
        parser.add_argument(
            "--batch", type=int, default=50, help=f"readings per request, 1 to {MAX_READINGS} (default 50)"
        )
        parser.add_argument("--threads", type=int, default=16, help="concurrent connections (default 16)")
        parser.add_argument("--resend", type=float, default=0.02, help="fraction of batches sent twice (0.02)")
        parser.add_argument("--url", default=None, help="the server (default http://127.0.0.1:WEB_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["batch"] <= MAX_READINGS:
            raise CommandError(f"--batch must be 1 to {MAX_READINGS}")
        if options["devices"] < 1 or options["duration"] <= 0:
            raise CommandError("--devices must be at least 1 and --duration positive")
        rate = parse_rate(options["rate"], setting="--rate").tokens_per_second
        url = options["url"] or f"http://127.0.0.1:{settings.WEB_PORT}"
        devices = register(options["devices"])
        simulation = Simulation(
            url,
            devices,
            rate=rate,
            duration=options["duration"],
            batch=options["batch"],
            threads=options["threads"],
            resend=options["resend"],
        )
        self.stdout.write(
            f"{len(devices)} devices -> {url}: {rate:g} readings/s in batches of {options['batch']} "
            f"(one batch per device every {simulation.interval:.2f}s) for {options['duration']:g}s"
        )
        tally = simulation.tally
        bar = ProgressBar(int(rate * options["duration"]), label="simulate", stream=self.stdout)

        lock = threading.Lock()

        def progress(readings: int) -> None:
            with lock:  # one bar, many threads
                counts = (tally.accepted, tally.duplicates, tally.throttled, tally.errors)
                bar.label = "accepted {} dup {} throttled {} errors {}".format(*counts)
                bar.advance(readings)

        elapsed = simulation.run(on_progress=progress)
        bar.finish(tally.summary(elapsed))
