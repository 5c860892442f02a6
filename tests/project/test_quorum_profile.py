"""The quorum profile's declarations (EVENTBUS_QUEUE_TYPE=quorum) and its refusals: no broker, no worker.

That they work on a real RabbitMQ is tests/failover/test_quorum.py and the fault suite run with
FAULTS_BROKER=quorum (tests/faults/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from eventbus.celery_settings import (
    BROKER_DEAD_LETTER_EXCHANGE,
    BROKER_DELIVERY_LIMIT,
    DELIVERY_LIMIT_MARGIN,
    celery_settings,
)
from eventbus.delivery import receive
from eventbus.delivery.receive import _from_broker_dead_letters
from eventbus.operations.checks import improper, queue_type_problem
from project.startup_checks import check_queue_type
from tests.conftest import REPO

AMQP = "amqp://guest:guest@127.0.0.1:5672/eventdemo"
QUEUES = ("eventbus", "dead_letter", "notifications")


def _quorum(**extra: Any) -> dict[str, Any]:
    return celery_settings(
        {"CELERY_BROKER_URL": AMQP, "EVENTBUS_QUEUE_TYPE": "quorum", "EVENTBUS_QUEUES": QUEUES, **extra}
    )


def test_every_queue_is_a_quorum_queue_behind_a_topic_exchange_of_its_name() -> None:
    queues = {queue.name: queue for queue in _quorum()["CELERY_TASK_QUEUES"]}
    assert set(queues) == set(QUEUES)
    for name, queue in queues.items():
        assert queue.queue_arguments["x-queue-type"] == "quorum"
        # Topic: Celery's native delayed delivery cannot route a countdown through a direct exchange.
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, "topic", name)


def test_the_broker_limit_is_fixed_and_dead_letters_at_least_once() -> None:
    # Fixed: a queue's arguments cannot change, so they must not follow a setting.
    for deliveries in (1, 5, 15):
        arguments = _quorum(EVENTBUS_MAX_DELIVERIES=deliveries)["CELERY_TASK_QUEUES"][0].queue_arguments
        assert arguments["x-delivery-limit"] == BROKER_DELIVERY_LIMIT
    # The default exchange, straight into the dead-letter queue: no binding that could be missing.
    assert (arguments["x-dead-letter-exchange"], arguments["x-dead-letter-routing-key"]) == ("", "dead_letter")
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"  # at-least-once needs it


def test_worker_and_transport_settings_of_the_profile() -> None:
    found = _quorum()
    assert found["CELERY_WORKER_DETECT_QUORUM_QUEUES"] is True
    assert found["CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE"] == "quorum"
    assert found["CELERY_TASK_DEFAULT_QUEUE_TYPE"] == "quorum"
    options = found["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["confirm_publish"] is True
    assert "socket_connect_timeout" in options  # merged into the broker's options, not in place of them


def test_classic_is_the_default_and_unchanged() -> None:
    found = celery_settings({"CELERY_BROKER_URL": AMQP, "EVENTBUS_QUEUES": QUEUES})
    for queue in found["CELERY_TASK_QUEUES"]:
        assert queue.exchange.type == "direct"
        assert not queue.queue_arguments
    assert "confirm_publish" not in found["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert "CELERY_WORKER_DETECT_QUORUM_QUEUES" not in found


@pytest.mark.parametrize(
    ("queue_type", "url", "says"),
    [
        ("quorum", "redis://127.0.0.1:6379/0", "needs a RabbitMQ broker"),
        ("quorum", "rediss://user:secret@host:6380/0", "needs a RabbitMQ broker"),
        ("qourum", AMQP, "must be 'classic'"),
        ("", AMQP, "must be 'classic'"),
    ],
)
def test_refusals(queue_type: str, url: str, says: str) -> None:
    problem = queue_type_problem(queue_type, url)
    assert problem is not None and says in problem
    assert "secret" not in problem  # a URL's password never reaches a message
    with pytest.raises(ImproperlyConfigured, match=says):
        check_queue_type(queue_type, url)


@pytest.mark.parametrize("url", [AMQP, "amqps://h:5671/v", "pyamqp://h//"])
def test_quorum_on_amqp_and_classic_anywhere_pass(url: str) -> None:
    assert queue_type_problem("quorum", url) is None
    assert queue_type_problem("classic", "redis://127.0.0.1:6379/0") is None


def test_a_process_with_quorum_on_redis_does_not_start() -> None:
    env = {**os.environ, "EVENTBUS_QUEUE_TYPE": "quorum", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "EVENTBUS_QUEUE_TYPE=quorum needs a RabbitMQ broker" in done.stderr


class _Message:
    """What the consumer reads of a kombu message (its delivery_info and headers), and its acknowledgement."""

    def __init__(self, exchange: str, headers: dict[str, Any]) -> None:
        self.delivery_info = {"exchange": exchange, "routing_key": "notifications"}
        self.headers = headers
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1


def test_a_message_the_broker_dead_lettered_is_known_by_its_exchange_and_x_death() -> None:
    deaths = [
        {"reason": "delivery_limit", "queue": "notifications", "count": 1},
        {"reason": "expired", "queue": "celery_delayed_0", "count": 1},
    ]
    found = _from_broker_dead_letters(_Message(BROKER_DEAD_LETTER_EXCHANGE, {"task": "x", "x-death": deaths}))
    assert found == ("delivery_limit", "notifications")
    assert _from_broker_dead_letters(_Message("notifications", {"task": "x", "x-death": deaths})) is None
    assert _from_broker_dead_letters(_Message(BROKER_DEAD_LETTER_EXCHANGE, {"task": "x"})) is None


@pytest.mark.parametrize("reason", ["rejected", "expired"])
def test_ends_the_bus_chose_are_acknowledged_without_a_dead_letter(
    reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[str] = []
    monkeypatch.setattr(receive, "_dead_letter", lambda message, text, exc, **_: captured.append(text))
    message = _Message(BROKER_DEAD_LETTER_EXCHANGE, {"x-death": [{"reason": reason, "queue": "eventbus"}]})
    receive._take_broker_dead_letter(message, reason, "eventbus")
    assert (message.acks, captured) == (1, [])


def test_a_delivery_limit_is_a_dead_letter_with_its_reason_then_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[str] = []
    monkeypatch.setattr(receive, "_dead_letter", lambda message, text, exc, **_: captured.append(text))
    message = _Message(BROKER_DEAD_LETTER_EXCHANGE, {"x-death": [{"reason": "delivery_limit", "queue": "analytics"}]})
    receive._take_broker_dead_letter(message, "delivery_limit", "analytics")
    assert message.acks == 1
    assert len(captured) == 1 and "'analytics' (delivery_limit)" in captured[0]


def test_the_bus_counter_must_stay_below_the_broker_limit() -> None:
    from django.conf import settings

    def found(queue_type: str, deliveries: int) -> list[str]:
        current = {name: getattr(settings, name) for name in dir(settings) if name.isupper()}
        changed = {"EVENTBUS_QUEUE_TYPE": queue_type, "EVENTBUS_MAX_DELIVERIES": deliveries, "CELERY_BROKER_URL": AMQP}
        values = SimpleNamespace(**{**current, **changed})
        return [p for p in improper(values) if "EVENTBUS_MAX_DELIVERIES" in p]

    highest = BROKER_DELIVERY_LIMIT - DELIVERY_LIMIT_MARGIN
    assert found("quorum", highest) == []
    assert "must be at most" in found("quorum", highest + 1)[0]
    assert found("classic", highest + 1) == []
