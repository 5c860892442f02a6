"""The PostgreSQL restart test's system and load: web (gunicorn), workers and beat as subprocesses on a
cluster of their own, sign-ups over HTTP from a thread, and what the checker reads back from the database
and the broker. (The lead's lab/failover/system.py does the same for the lab; this one is the test's.)"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import requests

from devinbox.sink import free_port
from project import queues
from tests.conftest import REPO, spawn_logged, wait_for
from tests.faults.processes import Worker, Workers
from tests.faults.provider import ProviderSink

UNAVAILABLE_TEXT = b"please try again in 10 seconds"


@dataclass
class Answer:
    at: float
    status: int
    email: str
    retry_after: str | None
    says_try_again: bool
    excerpt: bytes

    @classmethod
    def of(cls, response: requests.Response, email: str) -> Answer:
        said = UNAVAILABLE_TEXT in response.content
        return cls(
            time.monotonic(),
            response.status_code,
            email,
            response.headers.get("Retry-After"),
            said,
            response.content[:300],
        )


@dataclass
class SignUps:
    """Sign-ups through the form over HTTP, one after another, from a thread, until stopped."""

    base_url: str
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sign-ups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        session = requests.Session()
        number = 0
        while not self._stop.is_set():
            number += 1
            email = f"pg-{os.getpid()}-{number}@example.com"
            try:
                self.answers.append(self._sign_up(session, email))
            except requests.RequestException as exc:
                self.errors.append(f"{email}: {type(exc).__name__}: {exc}")
            time.sleep(0.05)

    def _sign_up(self, session: requests.Session, email: str) -> Answer:
        form = session.get(f"{self.base_url}/signup/", timeout=10)
        if form.status_code != 200:
            return Answer.of(form, email)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content)
        assert token is not None, form.text[:500]
        data = {"csrfmiddlewaretoken": token.group(1).decode(), "email": email}
        data |= {"password": "a long password 123", "password_confirm": "a long password 123"}
        response = session.post(f"{self.base_url}/signup/", data=data, allow_redirects=False, timeout=10)
        return Answer.of(response, email)


@dataclass
class System:
    """Web (gunicorn), workers for every queue and beat on the cluster, the private Redis and the sink."""

    env: dict[str, str]
    redis_url: str
    log_dir: Path
    processes: Workers
    sink: ProviderSink
    web: Worker | None = None
    base_url: str = ""

    def start(self) -> None:
        migrate = spawn_logged(
            [*_python(), "manage.py", "migrate", "--noinput"], self.env, self.log_dir / "migrate.log"
        )
        assert migrate.wait(timeout=120) == 0, (self.log_dir / "migrate.log").read_text()[-3000:]
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        command = [*_python(), "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}"]
        command += ["--workers", "2", "--no-control-socket", "--timeout", "30"]
        log_path = self.log_dir / "web.log"
        self.web = Worker("web", (), spawn_logged(command, self.env, log_path), log_path)
        self.processes.started.append(self.web)
        spawned = [
            self.processes.spawn("mail", queues.NOTIFICATIONS),
            self.processes.spawn("analytics", queues.ANALYTICS),
            # At DEBUG: its routine "succeeded" lines (the relay, the reconciler) prove that they ran.
            self.processes.spawn("housekeeping", queues.EVENTBUS, queues.DEAD_LETTER, concurrency=1, LOG_LEVEL="DEBUG"),
        ]
        self.processes.wait_ready(*spawned)
        self.processes.start_beat()
        wait_for(self._web_answers, timeout=30, what="the web answering /healthz")

    def _web_answers(self) -> bool:
        assert self.web is not None and self.web.alive(), self.web.log() if self.web else ""
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def pids(self) -> dict[str, int]:
        return {w.name: w.pid for w in self.processes.started if w.alive()}

    def log(self, name: str) -> str:
        return "".join(w.log() for w in self.processes.started if w.name == name)


def _python() -> list[str]:
    return [str(REPO / ".venv" / "bin" / "python")]


HOUSEKEEPING = ("eventbus.relay_outbox", "eventbus.reconcile_deliveries")


def housekeeping_runs(system: System) -> dict[str, int]:
    """How many runs of the relay and the reconciler the housekeeping worker logged as succeeded."""
    log = system.log("housekeeping")
    return {task: len(re.findall(re.escape(task) + r"\[[^\]]+\] succeeded", log)) for task in HOUSEKEEPING}


def committed_events(url: str) -> list[str]:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        rows = db.execute("SELECT id::text FROM eventbus_outboxevent WHERE type = 'user.signed_up'").fetchall()
    return [row[0] for row in rows]


UNDISPATCHED = "SELECT count(*) FROM eventbus_outboxevent WHERE status <> 'dispatched'"


def settled(system: System) -> bool:
    """Nothing more can arrive: no message waits in a queue, none is delivered and unacknowledged
    (a retry waiting for its countdown is held unacknowledged by its worker)."""
    client = redis.Redis.from_url(system.redis_url)
    prefix = system.env.get("REDIS_KEY_PREFIX", "")
    waiting = sum(client.llen(prefix + q) for q in (queues.NOTIFICATIONS, queues.ANALYTICS, queues.DEAD_LETTER))
    return waiting == 0 and client.hlen(prefix + "unacked") == 0


def analytics_event_ids(url: str) -> list[str]:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        rows = db.execute("SELECT event_id::text FROM analytics_analyticsevent WHERE type = 'user.signed_up'")
        return [row[0] for row in rows.fetchall()]


def timeline_steps(url: str) -> list[tuple[str, int]]:
    """How many retried, duplicate (absorbed by the ledger) and redelivered steps the timeline holds."""
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        return db.execute("SELECT step, count(*) FROM eventbus_deliverystep GROUP BY step").fetchall()


def dead_letters(url: str) -> list[tuple[str, ...]]:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        return db.execute(
            "SELECT kind, subscriber, task_name, exception_type, left(exception_message, 300), attempts"
            " FROM eventbus_deadletter"
        ).fetchall()


def count(url: str, sql: str) -> int:
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        return int(db.execute(sql).fetchone()[0])  # type: ignore[index]
