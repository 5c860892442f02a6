"""RabbitMQ with quorum queues (EVENTBUS_QUEUE_TYPE=quorum) on a node of the test's own (lab/failover/rabbitmq.py).

- The node stops while sign-ups are in flight and starts again: every committed sign-up is
  done once (one email, one analytics row), and the workers and beat are the processes
  that started (nobody restarted anything).
- A countdown is held by the broker: it waits in a ``celery_delayed_*`` queue, and the
  worker's single pool process runs another task meanwhile.

Every process but the test runner is a subprocess on the quorum profile: the workers,
beat, ``manage.py seed_demo`` (the sign-ups, through the real sign-up code) and
``celery call`` (a task with a countdown). The test runner only reads the database, the
sink and the node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from kombu import Connection

from devinbox.sink import free_port
from eventbus.celery_settings import BROKER_DELIVERY_LIMIT
from eventbus.models import DeadLetter
from lab.failover.rabbitmq import RabbitNode
from project import queues
from tests.conftest import REPO, wait_for, worker_env
from tests.faults.faultapp.probes import PERMANENT, attempts
from tests.faults.harness import FAULT_ENV, probe_wire
from tests.faults.invariants import check_invariant
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

# Sign-ups, in flight while the node is stopped, and the node's time away.
SIGNUPS = 150
DOWN_FOR = 5.0
COUNTDOWN = 12
# A producer's send_task (sys.argv: task name, queue, event wire, countdown or 0).
SEND = """
import json, sys
import django
django.setup()
from project.celery import app
name, queue, wire, countdown = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
app.send_task(name, args=(wire,), queue=queue, routing_key=queue, countdown=countdown or None)
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitNode]:
    rabbit = RabbitNode(tmp_path / "rabbitmq")
    rabbit.start()
    print(f"RabbitMQ node {rabbit.node} started in {rabbit.started_in:.1f}s")
    try:
        yield rabbit
    finally:
        rabbit.stop()


@pytest.fixture
def system(node: RabbitNode, tmp_path: Path) -> Iterator[tuple[Workers, ProviderSink]]:
    """The keys' Redis, an SMTP sink and the workers' environment on the node; workers stopped at the end."""
    redis = PrivateRedis(port=free_port(), directory=tmp_path / "redis")
    redis.start()
    with ExitStack() as stack:
        stack.callback(redis.kill)
        sink = stack.enter_context(ProviderSink())
        stack.enter_context(override_settings(REDIS_URL=redis.url))
        env = worker_env(
            REDIS_URL=redis.url,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(sink.port),
            **FAULT_ENV,
            **node.env(),
            # The relay sends what the outage left in the outbox soon after the node is back.
            EVENTBUS_RELAY_INTERVAL="1",
            EVENTBUS_RELAY_GRACE="2",
        )
        pool = Workers(env, tmp_path)
        stack.callback(pool.stop_all)
        try:
            yield pool, sink
        finally:
            # Shown by pytest only when the test failed.
            print(pool.logs())
            print(node.log()[-4000:])


def _manage(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def send(env: dict[str, str], wire: dict[str, object], countdown: int | None = None) -> None:
    """Send a PERMANENT probe to analytics from a process of its own on the quorum profile, as any producer would."""
    done = subprocess.run(
        [sys.executable, "-c", SEND, PERMANENT, queues.ANALYTICS, json.dumps(wire), str(countdown or 0)],
        cwd=REPO,
        env={**env, "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_node_stopped_with_sign_ups_in_flight_loses_and_doubles_nothing(
    node: RabbitNode, system: tuple[Workers, ProviderSink]
) -> None:
    workers, sink = system
    started = [
        workers.spawn("q-mail", queues.NOTIFICATIONS),
        workers.spawn("q-analytics", queues.ANALYTICS, queues.DEAD_LETTER),
        workers.spawn("q-housekeeping", queues.EVENTBUS, concurrency=1),
    ]
    workers.wait_ready(*started)
    started.append(workers.start_beat())
    pids = {w.name: w.pid for w in started}
    # A slow provider keeps a backlog in the queues when the node goes.
    sink.latency = 0.05
    users = get_user_model().objects

    # when: sign-ups run, and the node stops while they do
    signing_up = _manage(workers.base_env, "seed_demo", str(SIGNUPS))
    wait_for(lambda: users.count() >= 10, timeout=60, what="sign-ups under way")
    node.stop_node()  # raises if the node still answers AMQP
    down_at = time.monotonic()
    in_flight = users.count()
    assert in_flight < SIGNUPS, "the sign-ups were over before the node stopped"
    time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
    emailed_while_down = len(sink.messages)
    node.start_node()
    back_at = time.monotonic()
    output, _ = signing_up.communicate(timeout=120)
    assert signing_up.returncode == 0, output
    print(f"node down {back_at - down_at:.1f}s; {in_flight} of {SIGNUPS} sign-ups committed when it stopped")

    # then: deliveries resume by themselves
    wait_for(lambda: len(sink.messages) > emailed_while_down, timeout=60, what="a delivery after the restart")
    first = time.monotonic() - back_at

    # and: everything is delivered once (the relay sends what the outage left in the outbox)
    def all_done() -> bool:
        events = users.count()
        return len({m.message_id for m in sink.messages}) >= events == SIGNUPS

    wait_for(all_done, timeout=120, interval=0.5, what="every sign-up emailed")
    drained = time.monotonic() - back_at

    # Beat's housekeeping tasks (the relay every second) keep one in flight on the eventbus queue by design,
    # and each rabbitmqctl reading takes about a second: only the subscribers' queues must hold none.
    def nothing_unacknowledged() -> bool:
        return sum(u for name, (_, u) in node.queues().items() if name != queues.EVENTBUS) == 0

    wait_for(nothing_unacknowledged, timeout=30, what="nothing unacknowledged")
    print(f"first delivery {first:.1f}s after the node was back; all delivered {drained:.1f}s after")
    check_invariant(sink, "quorum queues: RabbitMQ node stopped and started", committed=SIGNUPS)

    # and: the workers saw the broker go and came back by themselves, and nothing was restarted
    for worker in started[:3]:
        assert "Connection to broker lost" in worker.log(), f"{worker.name} never lost the broker"
    assert {w.name: w.pid for w in started if w.alive()} == pids


def test_a_countdown_is_held_by_the_broker_not_by_a_worker_process(
    node: RabbitNode, system: tuple[Workers, ProviderSink]
) -> None:
    workers, _sink = system
    # One pool process: a countdown held by the worker would keep it from anything else.
    worker = workers.start("q-single", queues.ANALYTICS, queues.DEAD_LETTER, concurrency=1)
    later, now = probe_wire("later"), probe_wire("now")

    def call(wire: dict[str, object], countdown: int | None = None) -> None:
        send(workers.base_env, wire, countdown)

    # when: a task with a countdown, then one without
    sent = time.time()
    call(later, countdown=COUNTDOWN)
    call(now)

    # then: the second runs first, while the first waits in the broker's delay queues
    wait_for(lambda: attempts(PERMANENT, now["id"]), timeout=30, what="the task without countdown")

    # (RabbitMQ's counts of a quorum queue lag by up to its statistics interval: 1 s on this node.)
    def held() -> bool:
        delayed = [ready for name, (ready, _) in node.queues().items() if name.startswith("celery_delayed_")]
        return sum(delayed) == 1

    wait_for(held, timeout=COUNTDOWN / 3, interval=0.5, what="the countdown task in a celery_delayed_* queue")
    wait_for(lambda: node.queues()[queues.ANALYTICS] == (0, 0), timeout=COUNTDOWN / 3, what="the other task done")
    assert not attempts(PERMANENT, later["id"])
    assert f"{later['id']}" not in worker.log(), "the worker received the countdown task before it was due"

    # and: the first runs once its countdown is over, no sooner
    wait_for(lambda: attempts(PERMANENT, later["id"]), timeout=COUNTDOWN + 30, what="the countdown task")
    ran_at = attempts(PERMANENT, later["id"])[0]
    print(f"countdown {COUNTDOWN}s: ran {ran_at - sent:.1f}s after it was sent; the other task ran meanwhile")
    assert ran_at - sent >= COUNTDOWN - 0.5
    wait_for(lambda: DeadLetter.objects.count() == 2, timeout=30, what="both permanent failures dead-lettered")
    assert worker.alive()


def test_a_worker_refuses_to_start_on_queues_of_the_other_type(
    node: RabbitNode, system: tuple[Workers, ProviderSink]
) -> None:
    workers, _sink = system
    # given: the queues as the classic profile declared them (direct exchanges, classic queues)
    classic = workers.start("q-classic", queues.ANALYTICS, concurrency=1, EVENTBUS_QUEUE_TYPE="classic")
    classic.stop()

    # when: a worker of the quorum profile starts on them
    quorum = workers.spawn("q-quorum", queues.ANALYTICS, concurrency=1)
    wait_for(lambda: not quorum.alive(), timeout=60, what="the quorum worker to refuse")

    # then: it says what is wrong and what to do, and the queue is still the classic one
    log = quorum.log()
    assert "refusing to start: queues differ on the broker" in log
    assert "PRECONDITION_FAILED" in log and "EVENTBUS_QUEUE_TYPE" in log and "delete_queue" in log
    assert queues.ANALYTICS in node.queues()


def test_a_message_past_the_broker_delivery_limit_becomes_a_dead_letter_with_its_reason(
    node: RabbitNode, system: tuple[Workers, ProviderSink]
) -> None:
    workers, _sink = system
    # Only the dead-letter queue has a worker; it declares every queue as it starts (eventbus/signals.py).
    workers.start("q-dead", queues.DEAD_LETTER, concurrency=1)
    wire = probe_wire("limit")
    send(workers.base_env, wire)

    # when: the message is handed out and put back (as by a consumer that keeps dying) past the broker's limit
    returned = 0
    with Connection(node.url) as connection:
        channel = connection.default_channel
        deadline = time.monotonic() + 60
        while not DeadLetter.objects.filter(task_name=PERMANENT).exists() and time.monotonic() < deadline:
            message = channel.basic_get(queue=queues.ANALYTICS, no_ack=False)
            if message is None:
                time.sleep(0.1)
                continue
            channel.basic_reject(message.delivery_tag, requeue=True)
            returned += 1

    # then: RabbitMQ dead-lettered it, and the dead-letter worker made it a row saying so, never running it
    letter = wait_for(lambda: DeadLetter.objects.filter(task_name=PERMANENT).first(), timeout=30, what="the row")
    print(f"returned {returned} times; dead letter: {letter.exception_type}: {letter.exception_message}")
    assert returned >= BROKER_DELIVERY_LIMIT
    assert (letter.kind, letter.exception_type, str(letter.event_id)) == (
        "poison",
        "RabbitMQ.delivery_limit",
        wire["id"],
    )
    assert "x-delivery-limit" in letter.exception_message
    assert not attempts(PERMANENT, wire["id"])
    assert node.queues()[queues.ANALYTICS] == (0, 0)
