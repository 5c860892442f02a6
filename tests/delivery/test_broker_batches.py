"""The batching worker's shortcuts through the broker, against the real Redis (eventbus/fastpath/broker*.py).

Each is checked against what kombu would have done one message at a time:
the unacknowledged index and hash kombu's ``QoS`` keeps, and kombu's
in-memory bookkeeping that prefetch and ``restore_unacked`` rely on.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from kombu import Consumer, Exchange, Queue

from eventbus.fastpath import broker_fetch
from eventbus.redis import client as redis_client
from project.celery import app as celery_app
from tests.conftest import broker_is_redis

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_is_redis(), reason="the Redis transport's own bookkeeping"),
]

ANALYTICS = "analytics.record_event"


def unacked_tags() -> set[str]:
    prefix = settings.REDIS_KEY_PREFIX
    client = redis_client()
    tags = set(client.hkeys(prefix + "unacked"))
    assert tags == set(client.zrange(prefix + "unacked_index", 0, -1)), "the index and the hash disagree"
    return tags


@pytest.fixture
def scratch_queue() -> Iterator[Queue]:
    """A queue of this test's own on the run's Redis (under the run's key prefix), deleted after."""
    name = f"test-broker-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with celery_app.connection_for_write() as conn:
        queue(conn.default_channel).declare()
    yield queue
    with celery_app.connection_for_write() as conn:
        queue(conn.default_channel).delete()
    redis_client().delete(settings.REDIS_KEY_PREFIX + name)


def publish(queue: Queue, count: int) -> list[dict[str, Any]]:
    bodies = [{"n": n, "id": str(uuid.uuid4())} for n in range(count)]
    with celery_app.connection_for_write() as conn, conn.Producer() as producer:
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key, serializer="json")
    return bodies


def test_a_batch_is_acknowledged_in_one_pipeline_and_kombu_keeps_count(scratch_queue: Queue) -> None:
    # given: five messages taken (unacknowledged, as a worker holds them)
    publish(scratch_queue, 5)
    with celery_app.connection_for_read() as conn:
        channel = conn.channel()
        taken = [channel.basic_get(queue=scratch_queue.name) for _ in range(5)]
        assert unacked_tags() >= {m.delivery_tag for m in taken}

        # when: three of them are acknowledged at once
        channel.ack_many(taken[:3])

        # then: gone from Redis's unacknowledged index and hash, acknowledged
        # in kombu's memory; the other two still held
        left = unacked_tags()
        assert not left & {m.delivery_tag for m in taken[:3]}
        assert left >= {m.delivery_tag for m in taken[3:]}
        assert all(m.acknowledged for m in taken[:3]) and not any(m.acknowledged for m in taken[3:])
        qos = channel.qos
        assert len(qos._delivered) - len(qos._dirty) == 2
        channel.ack_many(taken[:3])  # a second time: nothing (Message.ack would refuse)

        # when: the channel closes with two unacknowledged
        channel.close()

    # then: restore_unacked put exactly those two back on the queue
    prefix = settings.REDIS_KEY_PREFIX
    assert redis_client().llen(prefix + scratch_queue.name) == 2
    assert not unacked_tags() & {m.delivery_tag for m in taken}


def consume(conn: Any, queue: Queue, prefetch: int) -> tuple[Any, list[Any]]:
    """A kombu consumer of ``queue`` on a channel of its own, with ``prefetch``; returns the channel and its inbox."""
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)
    inbox: list[Any] = []
    consumer = Consumer(
        channel, queues=[queue], callbacks=[lambda body, message: inbox.append(message)], accept=["json"]
    )
    consumer.consume()
    return channel, inbox


def test_one_round_trip_takes_the_prefetch_room_each_recorded_as_kombu_records_it(scratch_queue: Queue) -> None:
    # given: 25 messages waiting in a queue whose consumer may fetch many, with room for 10
    assert settings.REDIS_KEY_PREFIX, "the run's key prefix is what kombu's global_keyprefix must match"
    bodies = publish(scratch_queue, 25)
    broker_fetch.fetch_many(scratch_queue.name)
    prefix = settings.REDIS_KEY_PREFIX
    client = redis_client()
    with celery_app.connection_for_read() as conn:
        channel, inbox = consume(conn, scratch_queue, prefetch=10)

        # when: one read of the BRPOP's reply
        conn.drain_events(timeout=5)

        # then: ten delivered in queue order, each in the unacknowledged index and
        # hash with the record kombu's QoS.append writes; the limit is reached
        assert [m.payload for m in inbox] == bodies[:10]
        assert client.llen(prefix + scratch_queue.name) == 15
        assert unacked_tags() == {m.delivery_tag for m in inbox}
        for message in inbox:
            record = json.loads(client.hget(prefix + "unacked", message.delivery_tag))
            assert record == [message._raw, scratch_queue.exchange.name, scratch_queue.routing_key]
        assert len(channel.qos._delivered) == 10 and not channel.qos.can_consume()

        # when: they are acknowledged, the next read takes the next ten, then the last five
        for expected in (bodies[10:20], bodies[20:]):
            channel.ack_many(inbox)
            inbox.clear()
            conn.drain_events(timeout=5)
            assert [m.payload for m in inbox] == expected
        channel.ack_many(inbox)

        # then: nothing waiting, nothing held
        assert client.llen(prefix + scratch_queue.name) == 0
        assert not unacked_tags()
        assert len(channel.qos._delivered) - len(channel.qos._dirty) == 0


def test_messages_fetched_many_at_once_go_back_when_the_channel_closes(scratch_queue: Queue) -> None:
    # given: 10 of 25 messages taken in one round trip, none acknowledged
    bodies = publish(scratch_queue, 25)
    broker_fetch.fetch_many(scratch_queue.name)
    with celery_app.connection_for_read() as conn:
        channel, inbox = consume(conn, scratch_queue, prefetch=10)
        conn.drain_events(timeout=5)
        assert len(inbox) == 10

        # when: the channel closes (a warm shutdown, a lost connection's clean-up)
        channel.close()

    # then: restore_unacked put every one of them back; all 25 wait again
    client = redis_client()
    waiting = [json.loads(raw) for raw in client.lrange(settings.REDIS_KEY_PREFIX + scratch_queue.name, 0, -1)]
    assert len(waiting) == 25
    assert not unacked_tags()
    assert {json.dumps(b, sort_keys=True) for b in bodies} == {
        json.dumps(json.loads(base64.b64decode(m["body"])), sort_keys=True) for m in waiting
    }


def test_a_message_the_script_cannot_read_stays_where_it_was(scratch_queue: Queue) -> None:
    # given: three messages, one that is no kombu message, then two more
    bodies = publish(scratch_queue, 3)
    client = redis_client()
    key = settings.REDIS_KEY_PREFIX + scratch_queue.name
    client.lpush(key, json.dumps({"body": "not a kombu message"}))
    publish(scratch_queue, 2)
    broker_fetch.fetch_many(scratch_queue.name)
    with celery_app.connection_for_read() as conn:
        channel, inbox = consume(conn, scratch_queue, prefetch=10)

        # when
        conn.drain_events(timeout=5)

        # then: the script took the two after the BRPOP's one and stopped at it,
        # left at the end the next BRPOP takes from (kombu's own path, as before)
        assert [m.payload for m in inbox] == bodies
        assert client.llen(key) == 3
        assert json.loads(client.lindex(key, -1)) == {"body": "not a kombu message"}
        assert unacked_tags() == {m.delivery_tag for m in inbox}
        channel.ack_many(inbox)


def test_a_queue_not_named_for_fetching_many_gets_one_message_per_round_trip(scratch_queue: Queue) -> None:
    publish(scratch_queue, 5)
    with celery_app.connection_for_read() as conn:
        channel, inbox = consume(conn, scratch_queue, prefetch=10)
        conn.drain_events(timeout=5)
        assert len(inbox) == 1
        channel.ack_many(inbox)
