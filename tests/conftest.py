"""Shared fixtures: a real Redis (tests/environment.py), real workers, a real SMTP sink."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from kombu.message import Message as KombuMessage

from devinbox.sink import SmtpSink
from eventbus.protection import failfast
from eventbus.redis import client as redis_client
from project import queues
from project.celery import app as celery_app

REPO = Path(__file__).resolve().parent.parent

# The failover suite starts and faults whole topologies of its own: its own CI step
# (`make test-failover`, which sets EVENTDEMO_FAILOVER=1), not part of `make test`.
collect_ignore = [] if os.environ.get("EVENTDEMO_FAILOVER") == "1" else ["failover"]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def prefixed_keys() -> list[str]:
    return list(redis_client().scan_iter(match=django_settings.REDIS_KEY_PREFIX + "*", count=500))


def broker_is_redis() -> bool:
    return str(celery_app.conf.broker_url).startswith(("redis://", "rediss://"))


def purge_broker() -> None:
    """Empty this run's queues, counters and limiter state; keep kombu's bindings, which routing needs."""
    doomed = [k for k in prefixed_keys() if "_kombu.binding" not in k]
    if doomed:
        redis_client().delete(*doomed)
    if not broker_is_redis():
        with celery_app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in queues.WORKER_QUEUES:
                try:
                    channel.queue_purge(queue)
                except Exception:  # not declared yet: nothing to purge
                    channel = conn.channel()


def queue_length(queue: str) -> int:
    """Messages waiting in ``queue``, read from the broker the way dispatch reads it."""
    from eventbus.protection.backpressure import read_depth

    with celery_app.connection_for_read() as conn:
        return read_depth(conn.default_channel, queue)


def drain_messages(queue: str) -> list[Any]:
    """Take every message waiting in ``queue`` off the broker (kombu messages: headers, body, delivery_info)."""
    taken: list[Any] = []
    with celery_app.connection_for_read() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue=queue, no_ack=True)) is not None:
            # Redis' virtual channel hands back kombu messages; py-amqp its own.
            taken.append(message if isinstance(message, KombuMessage) else channel.message_to_python(message))
    return taken


@receiver(setting_changed)
def _redis_client_follows_redis_url(setting: str, **_: Any) -> None:
    """A test that sets REDIS_URL (``settings``, ``override_settings``), or has it restored, gets a new client.

    The event bus caches its client (eventbus/redis.py); dropped here on every
    change, it can never outlive the URL it was made for, whatever order the
    fixtures are undone in.
    """
    if setting == "REDIS_URL":
        redis_client.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _clean_redis_at_end() -> Iterator[None]:
    yield
    keys = prefixed_keys()
    if keys:
        redis_client().delete(*keys)


@pytest.fixture(autouse=True)
def _marks_written_in_the_request(settings: Any) -> None:
    """In this process each dispatched mark is written by the request that sent its event.

    The marker's thread (eventbus/fastpath/marks.py) has a database connection of its
    own, which does not see a test's uncommitted rows; tests/fastpath/test_marks.py
    turns it on for committed ones. Worker and server subprocesses keep the
    project's default.
    """
    settings.EVENTBUS_MARK_BATCH_SECONDS = 0
    # Likewise each result row is written by its task here (eventbus/fastpath/results.py): a row written
    # by a thread after the test ended would outlive the test's database flush.
    settings.EVENTBUS_RESULT_BATCH_SECONDS = 0


@pytest.fixture(autouse=True)
def _failfast_gates_closed() -> None:
    """Each test starts as a fresh process does: asking Redis and the broker on the request path
    (eventbus/protection/failfast.py), whatever service a test before it stopped or hung."""
    failfast.REDIS.reset()
    failfast.BROKER.reset()


@pytest.fixture
def redis_prefix(settings: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix of this test's own (on this run's Redis database); its keys are deleted afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    prefix = f"test-{module}-{uuid.uuid4().hex[:12]}:"
    settings.REDIS_KEY_PREFIX = prefix
    yield prefix
    connection = redis_client()
    doomed = list(connection.scan_iter(match=prefix + "*"))
    if doomed:
        connection.delete(*doomed)


@pytest.fixture
def broker() -> Iterator[None]:
    """A clean broker for one test: this run's queues emptied before and after."""
    purge_broker()
    yield
    purge_broker()


@pytest.fixture
def smtp_sink(settings: Any) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port; the project sends its email there."""
    with SmtpSink(port=0) as sink:
        # pytest-django swaps in the in-memory backend; these tests want real SMTP.
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = sink.port
        yield sink


@contextmanager
def running_worker(*worker_queues: str, concurrency: int = 2, pool: str = "threads") -> Iterator[Any]:
    """A real Celery worker in a thread of this process, consuming ``worker_queues`` from Redis."""
    with start_worker(
        celery_app,
        pool=pool,
        concurrency=concurrency,
        queues=list(worker_queues or queues.WORKER_QUEUES),
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture
def worker(broker: None, smtp_sink: SmtpSink) -> Iterator[Any]:
    """A worker thread pool on the notifications and analytics queues."""
    with running_worker(queues.NOTIFICATIONS, queues.ANALYTICS) as w:
        yield w


def test_database_url() -> str:
    """The URL of the database this test run uses (pytest-django renamed it to the test database)."""
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def worker_env(**overrides: str) -> dict[str, str]:
    """The environment a worker subprocess needs to share this test run's database and Redis."""
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["EMAIL_HOST"] = str(django_settings.EMAIL_HOST)
    env["EMAIL_PORT"] = str(django_settings.EMAIL_PORT)
    env.update(overrides)
    return env


CELERY_WORKER = (sys.executable, "-m", "celery", "-A", "project", "worker")


def worker_options(worker_queues: Iterable[str], concurrency: int, nodename: str) -> list[str]:
    """A worker's options as the worker commands of docs/running.md give them, with a quiet start for tests."""
    return [
        "-Q",
        ",".join(worker_queues),
        "-c",
        str(concurrency),
        "-n",
        nodename,
        "--without-mingle",
        "--without-gossip",
        "-l",
        "INFO",
    ]


def spawn_logged(command: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` from the repository, output to ``log_path``, in a process group of its own
    (so that a test can stop or kill it with everything it forked)."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            list(command), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextmanager
def worker_process(
    *worker_queues: str, concurrency: int = 2, name: str = "w", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` subprocess (prefork), for tests that kill or stop it."""
    log = Path(os.environ["EVENTDEMO_TEST_RUN_DIR"]) / f"worker-{name}-{time.monotonic_ns()}.log"
    command = [*CELERY_WORKER, *worker_options(worker_queues, concurrency, f"{name}-{os.getpid()}@%h")]
    process = spawn_logged(command, env or worker_env(), log)
    try:
        wait_for(lambda: b"ready." in log.read_bytes() or process.poll() is not None, timeout=30, what="worker ready")
        if process.poll() is not None:
            pytest.fail(f"worker exited at start:\n{log.read_text()[-3000:]}")
        process.log_path = log  # type: ignore[attr-defined]
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The skipped tests grouped by reason, with counts, in one block: a skip nobody meant shows in CI's log."""
    reasons: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons.setdefault(reason.removeprefix("Skipped: "), []).append(report.nodeid)
    if not reasons:
        return
    terminalreporter.section(f"skipped: {sum(len(ids) for ids in reasons.values())} tests, by reason")
    for reason, ids in sorted(reasons.items(), key=lambda item: -len(item[1])):
        terminalreporter.write_line(f"{len(ids):4d}  {reason}")
        for nodeid in ids[:3]:
            terminalreporter.write_line(f"        {nodeid}")
        if len(ids) > 3:
            terminalreporter.write_line(f"        ... and {len(ids) - 3} more")
