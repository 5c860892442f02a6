"""Fixtures of the fault tests: a private Redis, an SMTP sink and real workers, all cleaned up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from devinbox.sink import free_port
from tests.brokers import using_broker
from tests.conftest import worker_env
from tests.faults import quorum
from tests.faults.harness import FAULT_ENV
from tests.faults.invariants import summaries
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """This process's Redis client and Celery app point at a fresh ``redis-server`` for the test.

    With FAULTS_BROKER=quorum the broker is a fresh vhost on RabbitMQ instead (tests/faults/quorum.py);
    the private Redis still holds the bus's keys.
    """
    server = PrivateRedis(port=free_port(), directory=tmp_path / "redis")
    server.start()
    vhost = quorum.Vhost() if quorum.ENABLED else None
    try:
        with ExitStack() as stack:
            if vhost is not None:
                vhost.create()
                stack.callback(vhost.delete)
                quorum.current = vhost
                stack.callback(setattr, quorum, "current", None)
            stack.enter_context(override_settings(REDIS_URL=server.url))
            stack.enter_context(using_broker(vhost.url if vhost is not None else server.url))
            yield server
    finally:
        server.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With FAULTS_BROKER=quorum, skip the tests that fault the Redis broker itself, saying why."""
    if not quorum.ENABLED:
        return
    for item in items:
        module = getattr(item, "module", None)
        reason = quorum.REDIS_BROKER_ONLY.get(module.__name__.rsplit(".", 1)[-1] if module else "")
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"a Redis broker fault: {reason}"))


@pytest.fixture
def sink() -> Iterator[ProviderSink]:
    """A real SMTP server in this process; the workers send their email to it."""
    # aiosmtpd logs every SMTP command at INFO: hundreds of lines per test, none of them news.
    mail_log = logging.getLogger("mail.log")
    level = mail_log.level
    mail_log.setLevel(logging.WARNING)
    try:
        with ProviderSink() as running:
            yield running
    finally:
        mail_log.setLevel(level)


@pytest.fixture
def workers(
    private_redis: PrivateRedis, sink: ProviderSink, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Workers]:
    """Start workers with ``workers.start(name, *queues)``; every one is stopped when the test ends."""
    # The worker's environment, from the test run's (database file, key prefix) plus the private Redis.
    env = worker_env(
        REDIS_URL=private_redis.url,
        CELERY_BROKER_URL=quorum.current.url if quorum.current is not None else private_redis.url,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(sink.port),
        **FAULT_ENV,
    )
    pool = Workers(env, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(pool.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the workers fixture print the worker logs when the test body failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The invariant lines of the fault tests, shown whether or not output was captured."""
    if summaries:
        terminalreporter.section("fault invariants")
        for line in summaries:
            terminalreporter.write_line(line)
