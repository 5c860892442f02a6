"""Everything a demo stands on, inside the demo's own process: Redis, the SMTP sink, workers, the database.

The launcher (lab/launcher.py) has already pointed this process's settings at
the demo's own Redis port, SMTP port, key prefix and SQLite file; the stage
starts those servers, migrates the database, starts the workers a demo asks
for, and stops all of it on the way out, also after a failure or Ctrl-C.
It also holds the few readings every demo narrates: queue depths, ledger
rows, emails, and the delivery steps (retried, waiting, dead-lettered...)
that the consumer records as they happen.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command

from lab.narration import Narrator
from lab.processes import Process, WorkerSpec, start_redis, start_worker
from lab.sink import LabSink

PASSWORD = "a long enough passphrase 42"


class DemoTimeout(Exception):
    """What a demo waited for did not happen in time; the demo fails with this text."""


@lru_cache(maxsize=2)
def _broker_redis(url: str) -> Any:
    """The lab's own client of the Redis whose lists are the broker's queues (REDIS_URL); each wait bounded."""
    import redis

    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5.0, socket_timeout=5.0)


class Stage:
    def __init__(self, demo: str, narrator: Narrator) -> None:
        self.demo = demo
        self.say = narrator.say
        self.directory = Path(settings.VAR_DIR) / "demo"
        self.log_dir = self.directory / f"{demo}-logs"
        self.redis_port = urlsplit(settings.REDIS_URL).port or 6379
        self.redis: Process | None = None
        self.workers: list[Process] = []
        self.sink = LabSink(port=settings.EMAIL_PORT)
        self._emails = itertools.count(1)
        self._steps_seen = 0

    # --- the servers ------------------------------------------------------

    def __enter__(self) -> Stage:
        try:
            self.start_redis()
            self.sink.start()
            call_command("migrate", verbosity=0)
        except BaseException:
            # __exit__ does not run when __enter__ fails: stop what did start.
            self.__exit__()
            raise
        self.say(
            f"stage: redis-server on port {self.redis_port}, SMTP sink on port {settings.EMAIL_PORT}, "
            f"database {settings.DATABASES['default']['NAME']}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        # aiosmtpd's stop() asserts that the sink was started.
        if getattr(self.sink, "_thread", None) is not None:
            self.sink.stop()
        if self.redis is not None:
            self.redis.stop()

    def start_redis(self) -> None:
        self.redis = start_redis(self.redis_port, self.directory / f"{self.demo}-redis", self.log_dir)

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def worker(self, name: str, *queues: str, concurrency: int = 1, **env: str) -> Process:
        """A real prefork ``celery worker`` on ``queues``; waits until it is ready."""
        started = time.monotonic()
        process = start_worker(WorkerSpec(name, queues, concurrency, env), self.log_dir)
        self.workers.append(process)
        self.say(f"worker {name} ready on {', '.join(queues)} (pid {process.pid}, {time.monotonic() - started:.1f}s)")
        return process

    # --- driving it -------------------------------------------------------

    def sign_up(self, local_part: str | None = None) -> Any:
        """A sign-up through the real service: user and OutboxEvent in one transaction, dispatch on commit."""
        from signups.services import sign_up

        email = f"{local_part or 'person'}{next(self._emails)}@example.com"
        return sign_up(email, PASSWORD)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 20, follow: bool = True) -> Any:
        """Poll ``predicate`` until truthy, narrating new delivery steps; DemoTimeout after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if follow:
                self.follow_steps()
            value = predicate()
            if value:
                if follow:
                    self.follow_steps()
                return value
            if time.monotonic() > deadline:
                raise DemoTimeout(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.05)

    # --- readings ---------------------------------------------------------

    def queue_depth(self, queue: str) -> int:
        return int(_broker_redis(settings.REDIS_URL).llen(settings.REDIS_KEY_PREFIX + queue))

    def peek(self, queue: str) -> list[str]:
        """The task name and event id of each message waiting in ``queue`` (kombu's JSON on a Redis list)."""
        import base64
        import json

        shown = []
        for raw in _broker_redis(settings.REDIS_URL).lrange(settings.REDIS_KEY_PREFIX + queue, 0, -1):
            message = json.loads(raw)
            body = json.loads(base64.b64decode(message["body"])) if message.get("body") else [[{}]]
            wire = body[0][0] if body and body[0] else {}
            shown.append(f"{message['headers'].get('task')}(event {wire.get('id')}, {wire.get('type')})")
        return shown

    def ledger_rows(self, subscriber: str | None = None, outcome: str | None = None) -> int:
        from eventbus.models import ProcessedEvent

        rows = ProcessedEvent.objects.all()
        if subscriber:
            rows = rows.filter(subscriber=subscriber)
        if outcome:
            rows = rows.filter(outcome=outcome)
        return rows.count()

    def emails(self) -> int:
        return len(self.sink.messages)

    def distinct_emails(self) -> int:
        return len(set(self.sink.message_ids()))

    def counter(self, name: str, subscriber: str) -> int:
        from eventbus import ops_api

        return int(ops_api.read_counter(name).get(subscriber, 0))

    def skip_steps(self) -> int:
        """Mark every delivery step recorded so far as told (a flood of alike steps); returns how many."""
        from eventbus.models import DeliveryStep

        skipped = DeliveryStep.objects.count() - self._steps_seen
        self._steps_seen += skipped
        return skipped

    def follow_steps(self) -> None:
        """Narrate the delivery steps (eventbus.observability.timeline) recorded since the last call, oldest first."""
        from eventbus.models import DeliveryStep

        for step in DeliveryStep.objects.order_by("id")[self._steps_seen :]:
            self._steps_seen += 1
            self.say(f"  {step.subscriber}: {step.step}: {step.detail}")
