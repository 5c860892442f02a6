"""The broker channel (eventbus/fastpath/broker.py) builds one redis-py client for its commands, not one per command."""

from __future__ import annotations

import pytest

from project.celery import app as celery_app
from tests.conftest import broker_is_redis

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_is_redis(), reason="the Redis transport's channel"),
]


def test_a_channel_reuses_its_client_until_its_pool_is_replaced() -> None:
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
            assert first.ping()
        # the client for BRPOP (kombu's own, on its own pool) is not this one
        assert channel.client is not first

        # a reconnect builds a new pool: the next command gets a client on it
        channel._pool = None
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.ping()
