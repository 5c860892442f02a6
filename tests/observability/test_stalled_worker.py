"""A real worker that stays alive but stops consuming is reported stalled: worker_health, /ops/, /metrics.

The fault: ``celery control cancel_consumer`` tells a real prefork worker
subprocess to stop consuming its queue; the process stays up (as after
celery#8030's Redis reset). Messages then wait in the queue, nothing finishes,
and after EVENTBUS_STALL_AFTER (2 s here) every report says so; told to
consume again (``add_consumer``), the same worker drains the queue and is
healthy. The tasks are the bus's own relay (``eventbus.relay_outbox``, on its
housekeeping queue): quick, and harmless with an empty outbox.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from devinbox.sink import free_port
from eventbus import ops_api
from eventbus.observability import counters, progress
from eventbus.outbox.relay import relay
from ops.views.access import VIEW_EVENTS
from project import queues
from project.celery import app as celery_app
from tests.brokers import dead_broker_url
from tests.conftest import REPO, queue_length, wait_for, worker_env, worker_process
from tests.delivery.test_batching import ANALYTICS, pending_events
from tests.ops.test_metrics import scrape, value
from tests.ops_users import staff_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(180)]

QUEUE = queues.EVENTBUS
# A stall after 2 s; the time limits below it by the start check's margin (eventbus/operations/checks.py:
# a heartbeat, 0.5 s here, and the 1 s write interval).
STALL_ENV = {"EVENTBUS_STALL_AFTER": "2", "EVENTBUS_TIME_LIMIT": "0.5", "EVENTBUS_SOFT_TIME_LIMIT": "0.3"}


@pytest.fixture
def stall_settings(settings: Any) -> None:
    settings.EVENTBUS_STALL_AFTER = 2.0
    settings.METRICS_TOKEN = ""


@pytest.fixture
def consumer(broker: None, stall_settings: None) -> Iterator[str]:
    """A prefork worker subprocess on the housekeeping queue; yields its node name."""
    with worker_process(QUEUE, concurrency=1, name="stall", env=worker_env(**STALL_ENV)):
        node = f"stall-{os.getpid()}@{socket.gethostname()}"
        wait_for(lambda: ops_api.worker_health([node]), timeout=15, what="the worker's progress record")
        yield node


def health(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``manage.py worker_health`` as a supervisor runs it: exit status, output, seconds taken."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "worker_health", *args],
        cwd=REPO,
        env=env or worker_env(**STALL_ENV),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip(), time.monotonic() - started


def send_tasks(count: int) -> None:
    for _ in range(count):
        celery_app.send_task("eventbus.relay_outbox", queue=QUEUE)


def test_a_worker_that_stops_consuming_is_reported_stalled_then_healthy_once_it_consumes(consumer: str) -> None:
    # given: the worker idle, its queue empty, for longer than EVENTBUS_STALL_AFTER
    time.sleep(2.5)
    code, out, _ = health("--worker", consumer)
    assert code == 0, out
    assert "nothing waits in its queues" in out

    # when: its consumer is cancelled (the process stays alive) and messages arrive
    replies = celery_app.control.cancel_consumer(QUEUE, destination=[consumer], reply=True, timeout=5)
    assert replies and consumer in replies[0], replies
    send_tasks(5)
    sent = time.monotonic()
    wait_for(lambda: ops_api.worker_health([consumer])[0].stalled, timeout=15, interval=0.1, what="a stall")
    detected = time.monotonic() - sent
    # not before EVENTBUS_STALL_AFTER (2 s) since the worker's last idle note: at most a heartbeat (0.5 s) and
    # the heartbeat's own time (a depth read and a write, up to 0.5 s on a loaded machine) earlier
    assert detected >= 2 - 0.5 - 0.5, detected

    # then: the fault happened (the messages wait, the worker is alive) and every report says "stalled"
    assert queue_length(QUEUE) >= 4
    assert celery_app.control.ping(destination=[consumer], timeout=5)
    code, out, _ = wait_for(lambda: (r := health("--worker", consumer))[0] == 1 and r, timeout=15, what="exit 1")
    assert len(out.splitlines()) == 1
    assert out.startswith(f"stalled: {consumer} finished nothing for ") and f"{QUEUE} (" in out
    page = staff_client(get_user_model(), VIEW_EVENTS).get("/ops/")
    assert page.status_code == 200
    row = f'<tr data-worker="{consumer}" data-stalled="1">'
    assert row in page.content.decode()
    families = scrape(Client(REMOTE_ADDR="127.0.0.1"))
    assert value(families["eventbus_worker_stalled"], "eventbus_worker_stalled", worker=consumer) == 1
    assert (
        value(families["eventbus_worker_seconds_since_finish"], "eventbus_worker_seconds_since_finish", worker=consumer)
        >= 2
    )

    # when: it is told to consume again
    celery_app.control.add_consumer(QUEUE, destination=[consumer], reply=True, timeout=5)
    resumed = time.monotonic()
    wait_for(lambda: not ops_api.worker_health([consumer])[0].stalled, timeout=15, interval=0.1, what="healthy")
    recovered = time.monotonic() - resumed
    wait_for(lambda: queue_length(QUEUE) == 0, timeout=30, what="the queue drained")
    print(f"stall reported {detected:.2f}s after the messages came; healthy {recovered:.2f}s after add_consumer")

    # then: the same worker is healthy everywhere
    wait_for(lambda: health("--worker", consumer)[0] == 0, timeout=15, what="exit 0")
    families = scrape(Client(REMOTE_ADDR="127.0.0.1"))
    assert value(families["eventbus_worker_stalled"], "eventbus_worker_stalled", worker=consumer) == 0
    assert (
        f'<tr data-worker="{consumer}" data-stalled="0">'
        in staff_client(get_user_model(), VIEW_EVENTS, username="ivan").get("/ops/").content.decode()
    )


def test_a_busy_worker_finishing_tasks_is_healthy_while_messages_wait(consumer: str) -> None:
    # given: the worker idle for longer than EVENTBUS_STALL_AFTER, then a backlog that takes it longer than that
    time.sleep(2.5)
    burst = time.monotonic()
    send_tasks(2000)
    verdicts = []
    # when: it is judged again and again while it drains the queue
    while queue_length(QUEUE) > 0 and time.monotonic() - burst < 60:
        verdicts.append((time.monotonic() - burst, ops_api.worker_health([consumer])[0]))
        time.sleep(0.2)
    # then: messages were waiting at each verdict, for longer than the stall time, and none said stalled
    backed_up = [(at, v) for at, v in verdicts if v.waiting[QUEUE] > 0]
    assert len(backed_up) >= 5 and backed_up[-1][0] > 2.5, verdicts
    assert not [v for _, v in verdicts if v.stalled], verdicts
    print(f"busy: {len(backed_up)} verdicts over {backed_up[-1][0]:.1f}s of backlog, none stalled")


def test_of_this_host_by_default_and_cannot_tell_without_a_worker(consumer: str) -> None:
    code, out, _ = health()
    assert code == 0 and consumer in out, out
    code, out, _ = health("--host", "no-such-host")
    assert code == 2 and out == "cannot tell: no progress of *@no-such-host in the last 30s (not started yet, or gone)"


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_redis_unreachable_answers_cannot_tell_within_the_bound(fault: str, stall_settings: None) -> None:
    # given: a Redis that refuses connections, or one that accepts them and never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if fault == "hung":
            listener.listen(16)
        else:
            listener.close()
        url = f"redis://127.0.0.1:{port}/0"
        env = worker_env(**STALL_ENV, REDIS_URL=url, CELERY_BROKER_URL=url)
        # when
        code, out, took = health("--worker", "any@host", "--timeout", "2", env=env)
    # then: exit 2 with the reason, within the bound (plus Django's start, measured ~1.5 s here)
    assert code == 2, out
    assert out.startswith("cannot tell: "), out
    assert took < 2 + 5, took
    print(f"worker_health with Redis {fault}: exit {code} in {took:.2f}s: {out}")


def test_a_broker_unreachable_answers_cannot_tell_within_the_bound(consumer: str) -> None:
    # given: the worker's record in Redis, and a broker URL where nothing listens
    env = worker_env(**STALL_ENV, CELERY_BROKER_URL=dead_broker_url())
    # when: its queue's depth cannot be read
    code, out, took = health("--worker", consumer, "--timeout", "2", env=env)
    # then
    assert code == 2 and out.startswith("cannot tell: "), out
    assert took < 2 + 5, took
    print(f"worker_health with the broker down: exit {code} in {took:.2f}s: {out}")


def test_a_batching_worker_reports_its_batches_as_finished(broker: None, stall_settings: None) -> None:
    # given: analytics events waiting, which a batching worker records in its main process's batches
    # (no task_postrun is sent for them: eventbus/delivery/buffer.py notes the finish)
    pending_events(50)
    relay(grace=0)
    assert queue_length(queues.ANALYTICS) == 50
    with worker_process(queues.ANALYTICS, concurrency=1, name="batchprogress", env=worker_env(**STALL_ENV)):
        node = f"batchprogress-{os.getpid()}@{socket.gethostname()}"
        # when
        wait_for(lambda: counters.read(counters.BATCHED).get(ANALYTICS, 0) == 50, timeout=60, what="every batch")
        # then: its record holds a finish, written within the write interval
        (found,) = wait_for(lambda: [p for p in progress.read([node]) if p.finished], timeout=5, what="a finish")
        assert found.queues == (queues.ANALYTICS,)
        assert time.time() - found.finished < 10


def test_the_ops_page_says_worker_progress_is_unavailable_without_redis(broker: None, stall_settings: None) -> None:
    # given: the bus's Redis unreachable (the broker untouched)
    page = staff_client(get_user_model(), VIEW_EVENTS)
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        # when
        started = time.monotonic()
        response = page.get("/ops/")
        took = time.monotonic() - started
    # then: the page answers, saying why the table is missing, without a second wait for the same failure
    assert response.status_code == 200
    assert 'id="worker-health-unavailable">Worker progress unavailable: ConnectionError' in response.text
    assert 'id="worker-health"' not in response.text
    assert took < 5, took
