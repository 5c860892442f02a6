"""Does a slow email provider hold up sign-ups and other emails? ``python -m bench.lock_probe [--delay 3]``

A probe, not a figure. An SMTP server that takes ``--delay`` seconds to accept
each message; one real worker on the ``notifications`` queue with the
project's default concurrency for it. Then:

1. one welcome email in flight, and a ``sign_up()`` timed while the worker is
   inside that slow SMTP conversation, and another one after it;
2. as many welcome emails as the worker has processes, and the time until
   all of them are done (in parallel that is about one ``--delay``).

Uses a redis-server and a temporary SQLite file of its own, like ``bench.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from bench.environment import configure, setup_django
from bench.processes import free_port, spawn, start_redis, stop, wait_until

PASSWORD = "correct horse battery staple"


class SlowProvider:
    """Accepts every message after ``delay`` seconds; ``in_data`` is set while it waits."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_data = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"


def timed_sign_up(email: str) -> float:
    from signups.services import sign_up

    start = time.perf_counter()
    sign_up(email, PASSWORD)
    return time.perf_counter() - start


def probe(delay: float, provider: SlowProvider, log: Path) -> None:
    from django.conf import settings

    from bench import throughput
    from eventbus.models import ProcessedEvent
    from eventbus.outbox.relay import relay
    from project import queues

    processes = queues.DEFAULT_CONCURRENCY[queues.NOTIFICATIONS]
    print(f"SMTP server delay per message: {delay:.1f} s; worker processes on {queues.NOTIFICATIONS}: {processes}")
    argv = throughput.worker_argv("project", (queues.NOTIFICATIONS,), "probe", None, concurrency=processes)
    worker = spawn(argv, env=os.environ, log=log)
    try:
        throughput.seed_outbox(1, "probe-one")
        relay(grace=0)
        if not provider.in_data.wait(timeout=60):
            raise TimeoutError(f"the worker never reached the SMTP server (log: {log})")
        time.sleep(0.2)  # well inside the provider's delay
        during = timed_sign_up("during-slow-email@example.com")
        print(f"sign_up() while a welcome email is being sent: {during * 1000:,.0f} ms", flush=True)
        if delay >= settings.EMAIL_TIMEOUT:
            print(f"(the delay is not below EMAIL_TIMEOUT={settings.EMAIL_TIMEOUT}s: every send fails; stopping here)")
            return
        wait_until(lambda: ProcessedEvent.objects.count() >= 1, timeout=delay + 30, what="the first email")
        after = timed_sign_up("after-slow-email@example.com")
        print(f"sign_up() after it:                            {after * 1000:,.0f} ms", flush=True)
        # The two timed sign-ups sent welcome emails of their own: let them finish first.
        wait_until(lambda: ProcessedEvent.objects.count() >= 3, timeout=2 * delay + 30, what="the first 3 emails")

        throughput.seed_outbox(processes, "probe-many")
        target = ProcessedEvent.objects.count() + processes
        start = time.perf_counter()
        relay(grace=0)
        wait_until(
            lambda: ProcessedEvent.objects.count() >= target,
            timeout=processes * (delay + 10) + 30,
            what=f"{processes} emails",
        )
        print(f"{processes} welcome emails at once, all done after:     {time.perf_counter() - start:,.1f} s")
    finally:
        stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lock_probe", description=__doc__)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds the SMTP server takes per message")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="eventdemo-probe-"))
    provider = SlowProvider(args.delay)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
        redis_process, redis_url = start_redis(run_dir / "redis")
        cleanup.callback(stop, redis_process)
        smtp = Controller(provider, hostname="127.0.0.1", port=free_port())
        smtp.start()
        cleanup.callback(smtp.stop)
        configure(run_dir, redis_url, smtp.port)
        setup_django()
        probe(args.delay, provider, run_dir / "worker.log")


if __name__ == "__main__":
    main()
