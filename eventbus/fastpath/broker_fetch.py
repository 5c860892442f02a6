"""Many messages per round trip from a batching subscriber's Redis queue, each recorded as unacknowledged.

kombu takes one message per ``BRPOP``, then records it as unacknowledged with
a second round trip (``QoS.append``: ``ZADD`` to the index, ``HSET`` of
``[payload, exchange, routing key]`` to the hash). For a queue named with
``fetch_many`` (the batching strategy names its own), after a ``BRPOP``
delivered one message and the prefetch limit leaves room for more, one Lua
script (broker_pop_and_record.lua) records that message and pops up to the
room's worth more from the same queue, recording each as unacknowledged in the
same atomic step: a popped message is in the unacknowledged hash the moment it
leaves its list, never in neither (the ``BRPOP`` itself keeps kombu's gap,
docs/operations.md "Known gaps"). They are delivered to the consumer with
kombu's in-memory bookkeeping, without a second round trip each. The prefetch
limit is respected: never more are taken than ``can_consume_max_estimate``
allows. What Redis holds for an unacknowledged message is unchanged (the same
keys and values), so the visibility-timeout sweep and ``restore_unacked`` put
them back as before.

``FetchMany`` is mixed into the transport's channel (eventbus/fastpath/broker.py).

Buys: figure 2, 1.82x -> 2.74x (lever 12, docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from redis import Redis

from eventbus.deadletters.listitems import readable_item

log = logging.getLogger(__name__)

# At most this many messages per pop-and-record script. Redis runs a script
# alone, so it bounds how long one fetch holds the server (a few ms for 2 kB
# messages); a batch of 200 (the analytics subscriber's) takes one script.
MOST_PER_FETCH = 256

# The script (eventbus/fastpath/broker_pop_and_record.lua). KEYS: the unacknowledged
# index and hash, then the queue's lists in BRPOP's order (highest priority
# first). ARGV: the time (kombu scores the index with the client's clock),
# how many to pop, and the message the BRPOP delivered (its tag and its hash
# value, or empty strings). Each popped message's record is kombu's
# ``dumps([payload, exchange, routing_key])``, built from the message's own
# bytes. A message without a delivery tag or delivery info goes back where it
# was (RPUSH to the end RPOP took it from) and the script stops: the next
# BRPOP takes it, and ``readable_item`` sets it aside as a dead letter.
_POP_AND_RECORD = (Path(__file__).parent / "broker_pop_and_record.lua").read_text()

_fetch_many: set[str] = set()


def fetch_many(queue: str) -> None:
    """Let this process's Redis consumers take up to their prefetch room from ``queue`` per round trip.

    Called by the batching strategy for its subscriber's queue. Other queues
    keep kombu's one message per ``BRPOP`` (and its fair rotation between the
    queues a worker consumes).
    """
    _fetch_many.add(queue)


class FetchMany(kombu_redis.Channel):
    """kombu's Redis channel, taking many messages per fetch from the queues named with ``fetch_many``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Delivery tags the pop-and-record script wrote to Redis, between the
        # script and their delivery (FailFastQoS.append, eventbus/fastpath/broker.py).
        self._recorded: set[str] = set()
        self._pop_and_record: Any = None
        super().__init__(*args, **kwargs)

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's Channel._brpop_read, with the delivery in _deliver_popped.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                payload = readable_item(item, dest)
                if payload is not None:
                    self._deliver_popped(payload, dest)
                return True
            else:
                raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _deliver_popped(self, payload: dict[str, Any], queue: str) -> None:
        room = self._room_after_one(queue)
        if not room:
            return self.connection._deliver(payload, queue)
        tag, value = _record(payload)
        keys = [self.qos.unacked_index_key, self.qos.unacked_key]
        keys += [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        prefix = self.global_keyprefix
        taken = self._script()(keys=[prefix + key for key in keys], args=[time.time(), room, tag, value])
        payloads = [payload]
        for raw in taken:
            later = readable_item(raw, queue)
            if later is None:
                # Set aside as a dead letter; the script had recorded it as unacknowledged.
                self._forget_unacked(raw)
            else:
                payloads.append(later)
        tags = [tag, *(p["properties"]["delivery_tag"] for p in payloads[1:])]
        self._recorded.update(tags)
        delivered = 0
        try:
            for p in payloads:
                self.connection._deliver(p, queue)
                delivered += 1
        except BaseException:
            # A consumer's callback failed: the messages not yet delivered are
            # held in memory all the same, so that the channel's close puts
            # them back at once (instead of the visibility timeout's sweep).
            for p, t in zip(payloads[delivered:], tags[delivered:], strict=True):
                if t not in self.qos._delivered:
                    virtual.QoS.append(self.qos, self.Message(p, channel=self), t)
            raise
        finally:
            self._recorded.clear()

    def _forget_unacked(self, raw: bytes) -> None:
        """Remove the unacknowledged record the pop-and-record script wrote for the item ``raw``."""
        try:
            # The script recorded it only after reading its tag with Lua's
            # cjson, which reads some items Python's json does not (hex
            # numbers, say). The tag as the script saw it: the same bytes.
            tag = json.loads(raw.decode("utf-8", errors="surrogateescape"))["properties"]["delivery_tag"]
            member = tag.encode("utf-8", errors="surrogateescape")
        except (ValueError, TypeError, KeyError, AttributeError):
            # The record stays: the visibility timeout's sweep puts the item
            # back, and it is set aside again as the same dead letter (its id
            # is the hash of its text).
            log.warning("%d-byte item set aside: its unacknowledged record stays until the sweep", len(raw))
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.zrem(self.qos.unacked_index_key, member).hdel(self.qos.unacked_key, member).execute()

    def _room_after_one(self, queue: str) -> int:
        """How many more messages than the one just popped may be taken from ``queue`` now."""
        if queue not in _fetch_many or queue not in self.connection._callbacks:
            return 0
        if not isinstance(self.qos, kombu_redis.QoS):
            return 0  # no acknowledgement emulation: nothing to record
        room = self.qos.can_consume_max_estimate()
        if not room:
            return 0  # no limit (0) or none left: one at a time, as kombu does
        return min(room - 1, MOST_PER_FETCH)

    def _script(self) -> Any:
        pool = self.pool
        if self._pop_and_record is None or self._pop_and_record.registered_client.connection_pool is not pool:
            # A client without kombu's key prefixing (the keys are prefixed
            # above), on the channel's own connection pool (a new one after
            # a fork or a reconnect).
            self._pop_and_record = Redis(connection_pool=pool).register_script(_POP_AND_RECORD)
        return self._pop_and_record


def _record(payload: dict[str, Any]) -> tuple[str, str]:
    """The delivery tag and unacknowledged-hash value kombu's ``QoS.append`` writes for ``payload``.

    ``payload`` passed ``readable_item``: it has each of these, of the right type.
    """
    properties = payload["properties"]
    delivery = properties["delivery_info"]
    return properties["delivery_tag"], dumps([payload, delivery["exchange"], delivery["routing_key"]])
