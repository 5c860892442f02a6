"""An ambiguous send: Redis applied the publish, its reply was lost. The event still has one effect.

The producer cannot tell a lost reply from a lost command, so the row stays
pending and the relay sends the event again: the broker then holds two copies
per subscriber. The consumers' ledger (and the email's Message-ID) turn them
into one email and one analytics row.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.test import override_settings

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink, free_port
from eventbus.models import OutboxEvent
from eventbus.observability import counters
from eventbus.outbox.relay import relay
from project import queues
from signups.services import sign_up
from tests.brokers import using_broker
from tests.conftest import broker_is_redis, running_worker, wait_for
from tests.environment import start_redis_server
from tests.factories import PASSWORD
from tests.faults.harness import ANALYTICS, WELCOME, welcome_id
from tests.outbox.test_relay_batch import CuttableProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.skipif(not broker_is_redis(), reason="the proxy speaks Redis's protocol, in front of a Redis"),
]


class ReplyLosingProxy(CuttableProxy):
    """The proxy of test_relay_batch.py, which loses one reply: armed, it forwards the first command
    that pushes onto a queue (LPUSH), lets Redis answer, then cuts the connection instead of relaying
    the answer. ``lost_reply`` holds what Redis said."""

    def __init__(self, host: str, port: int) -> None:
        self.armed = threading.Event()
        self.pushed = threading.Event()
        self.lost_reply = b""
        super().__init__(host, port)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            fired = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, fired), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, fired), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, fired: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self.armed.is_set() and not self.pushed.is_set() and b"LPUSH" in data.upper():
                    # Marked before forwarding: the reply to this command is the one to lose.
                    self.pushed.set()
                    fired.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client, server)

    def _replies(self, server: socket.socket, client: socket.socket, fired: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if fired.is_set():
                    # Redis has run the commands and answered: the answer goes nowhere.
                    self.lost_reply = data
                    self.armed.clear()
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client, server)


def _shut(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (its queues hold only this test's messages)."""
    port = free_port()
    server = start_redis_server(port, tmp_path / "redis")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(timeout=15)


def test_a_send_whose_reply_was_lost_is_sent_again_and_still_has_one_effect(
    own_redis: str, smtp_sink: SmtpSink
) -> None:
    prefix = django_settings.REDIS_KEY_PREFIX
    direct = redis.Redis.from_url(own_redis)
    proxy = ReplyLosingProxy("127.0.0.1", int(own_redis.rsplit(":", 1)[1].split("/")[0]))
    through_proxy = own_redis.replace(f":{proxy.upstream[1]}/", f":{proxy.port}/")
    try:
        with override_settings(REDIS_URL=own_redis):
            # given: the broker reached through a proxy that will lose the reply to the next push
            with using_broker(through_proxy):
                proxy.armed.set()
                # when: a sign-up's event is dispatched on commit
                sign_up("ambiguous@example.com", PASSWORD)
                event_id = str(OutboxEvent.objects.get(type="user.signed_up").id)

                # then: Redis took both messages, the producer never heard so, and the row waits for the relay
                assert proxy.pushed.is_set() and proxy.lost_reply, "no reply was lost: the fault missed"
                assert _copies(direct, prefix, event_id) == [1, 1]
                row = OutboxEvent.objects.get(pk=event_id)
                assert row.status == OutboxEvent.Status.PENDING and row.last_error
                print(f"reply lost: {proxy.lost_reply!r}; row pending with: {row.last_error}")

                # when: the relay sends it again (the proxy now passes everything)
                assert relay(grace=0).dispatched == 1

            # then: two copies per subscriber wait in the broker
            assert _copies(direct, prefix, event_id) == [2, 2]

            # when: a worker consumes them
            with using_broker(own_redis), running_worker(queues.NOTIFICATIONS, queues.ANALYTICS):
                wait_for(
                    lambda: counters.read(counters.DUPLICATES) == {WELCOME: 1, ANALYTICS: 1},
                    what="the second copies skipped as duplicates",
                )

            # then: one email by its Message-ID, one analytics row
            assert [m.message_id for m in smtp_sink.messages] == [welcome_id(event_id)]
            assert AnalyticsEvent.objects.filter(event_id=event_id).count() == 1
            assert OutboxEvent.objects.get(pk=event_id).status == OutboxEvent.Status.DISPATCHED
    finally:
        proxy.close()


def _copies(connection: redis.Redis, prefix: str, event_id: str) -> list[int]:
    """Messages naming ``event_id`` (in their argsrepr header) in the email queue, then the analytics queue."""
    return [
        sum(1 for raw in connection.lrange(prefix + queue, 0, -1) if event_id.encode() in raw)
        for queue in (queues.NOTIFICATIONS, queues.ANALYTICS)
    ]
