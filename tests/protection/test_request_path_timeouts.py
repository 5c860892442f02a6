"""The request path asks Redis and the broker with short timeouts; workers, beat and the relay keep theirs."""

from __future__ import annotations

import pytest
from django.conf import settings

from eventbus.fastpath.publishing_batch import request_producer
from eventbus.redis import client, request_client
from project.celery import app as celery_app
from tests.conftest import broker_is_redis

pytestmark = pytest.mark.integration


def test_the_budget_is_shared_by_the_two_services_a_request_asks() -> None:
    assert pytest.approx(settings.EVENTBUS_PUBLISH_TIMEOUT) == settings.EVENTBUS_REQUEST_TIMEOUT * 2


def test_the_request_paths_producer_has_the_short_timeouts_and_celerys_own_the_workers() -> None:
    short = settings.EVENTBUS_REQUEST_TIMEOUT
    with request_producer(celery_app) as producer:
        options = producer.connection.transport_options
        channel = producer.channel
    assert options["socket_timeout"] == options["socket_connect_timeout"] == short
    assert options["read_timeout"] == options["write_timeout"] == short
    assert producer.connection.connect_timeout == short
    # The rest of the broker's options (key prefix, visibility timeout, one connection attempt) are kept.
    for name in ("visibility_timeout", "max_retries", "global_keyprefix"):
        if name in settings.CELERY_BROKER_TRANSPORT_OPTIONS:
            assert options[name] == settings.CELERY_BROKER_TRANSPORT_OPTIONS[name]
    if broker_is_redis():
        assert channel.socket_timeout == short
        # A consumer's (workers'): Celery's own connection, with the longer timeout.
        with celery_app.connection_for_read() as connection:
            assert (
                connection.default_channel.socket_timeout == settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"]
            )
            assert connection.default_channel.socket_timeout > short


def test_the_request_paths_redis_client_has_the_short_timeout_and_never_retries() -> None:
    kwargs = request_client().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == settings.EVENTBUS_REQUEST_TIMEOUT
    assert kwargs["retry"].get_retries() == 0
    assert client().connection_pool.connection_kwargs["socket_timeout"] > settings.EVENTBUS_REQUEST_TIMEOUT
