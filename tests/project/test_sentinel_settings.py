"""Redis behind Sentinel: the settings, their refusals, the broker derived from them, the bus's clients.

Fast: nothing here connects to anything (one test starts a Python process to
prove the settings module refuses at start). The real topology is proven in
tests/failover/test_sentinel.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from redis.sentinel import SentinelConnectionPool

from eventbus import redis as eventbus_redis
from eventbus.celery_settings import celery_settings
from eventbus.sentinel import SentinelConfig, parse_sentinels, sentinel_config
from tests.conftest import REPO

SENTINELS = "10.0.0.1:26379,10.0.0.2:26380, sentinel-3.example:26381"


def values(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REDIS_SENTINELS": SENTINELS,
        "REDIS_SENTINEL_MASTER": "eventdemo",
        "REDIS_URL": "redis://sentinel/3",
        "REDIS_PASSWORD": "node-secret",
        "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
    }
    return {**base, **overrides}


def test_the_sentinels_are_parsed_as_host_port_pairs() -> None:
    assert parse_sentinels(SENTINELS) == (
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26380),
        ("sentinel-3.example", 26381),
    )
    assert parse_sentinels("[::1]:26379") == (("::1", 26379),)


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1:", ":26379", "10.0.0.1:port", "10.0.0.1:70000", "a:1,,b:2"])
def test_a_malformed_sentinel_is_refused_saying_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="is not host:port; write the Sentinels as host:port,host:port"):
        parse_sentinels(text)


def test_without_sentinels_nothing_changes() -> None:
    assert sentinel_config({"REDIS_URL": "redis://127.0.0.1:6379/0"}) is None
    assert sentinel_config(values(REDIS_SENTINELS="  ")) is None


def test_the_config_takes_the_database_index_from_redis_url_and_the_passwords_from_their_settings() -> None:
    config = sentinel_config(values())
    assert config == SentinelConfig(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3.example", 26381)),
        master="eventdemo",
        db=3,
        password="node-secret",
        sentinel_password="sentinel-secret",
    )
    assert (
        config.broker_url()
        == "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26380;sentinel://sentinel-3.example:26381/3"
    )
    assert "secret" not in config.broker_url()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"REDIS_SENTINEL_MASTER": ""}, "REDIS_SENTINEL_MASTER is not: set it to the name"),
        ({"REDIS_URL": "redis://:pw@sentinel/0"}, "remove it from REDIS_URL and set REDIS_PASSWORD"),
        ({"REDIS_URL": "rediss://sentinel/0"}, "REDIS_URL is a rediss:// URL"),
        ({"REDIS_URL": "redis://sentinel/zero"}, "is not a number"),
        ({"CELERY_BROKER_URL": "redis://10.0.0.9:6379/0"}, "unset CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "sentinel://10.0.0.1:26379/0"}, "unset CELERY_BROKER_URL"),
    ],
)
def test_contradicting_settings_are_refused_saying_what_to_change(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        sentinel_config(values(**overrides))
    assert "pw" not in str(raised.value) and "secret" not in str(raised.value)


def test_the_broker_follows_the_sentinels_on_the_fail_fast_sentinel_transport() -> None:
    found = celery_settings(values(REDIS_KEY_PREFIX="run7:"))
    assert found["CELERY_BROKER_URL"].startswith("sentinel://10.0.0.1:26379;")
    assert found["CELERY_BROKER_URL"].endswith("/3")
    assert found["CELERY_BROKER_TRANSPORT"] == "eventbus.fastpath.sentinel:FailFastSentinelTransport"
    # A connection error never switches to kombu's stock transport by the next URL's scheme.
    assert next(found["CELERY_BROKER_FAILOVER_STRATEGY"](found["CELERY_BROKER_URL"].split(";"))) == "10.0.0.1"
    options = found["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["master_name"] == "eventdemo"
    assert options["redis_password"] == "node-secret"
    assert options["sentinel_password"] == "sentinel-secret"
    assert options["global_keyprefix"] == "run7:"
    # The same fail-fast options as the plain Redis transport's.
    plain = celery_settings({"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_KEY_PREFIX": "run7:"})
    for name, value in plain["CELERY_BROKER_TRANSPORT_OPTIONS"].items():
        assert options[name] == value


def test_rabbitmq_as_the_broker_stays_with_sentinel_for_the_bus_keys() -> None:
    found = celery_settings(values(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"))
    assert "CELERY_BROKER_URL" not in found  # the host's own stays
    assert "CELERY_BROKER_TRANSPORT" not in found
    assert "master_name" not in found["CELERY_BROKER_TRANSPORT_OPTIONS"]


def test_a_plain_redis_url_keeps_the_plain_transport() -> None:
    found = celery_settings({"REDIS_URL": "redis://127.0.0.1:6379/0", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert found["CELERY_BROKER_TRANSPORT"] == "eventbus.fastpath.broker:FailFastRedisTransport"
    assert "CELERY_BROKER_URL" not in found


def test_the_bus_clients_follow_the_sentinels_and_the_request_path_stays_fail_fast(settings: Any) -> None:
    for name, value in values().items():
        setattr(settings, name, value)
    settings.EVENTBUS_REQUEST_TIMEOUT = 0.25
    eventbus_redis.client.cache_clear()
    try:
        worker = eventbus_redis.client()
        request = eventbus_redis.request_client()
    finally:
        eventbus_redis.client.cache_clear()
    for client in (worker, request):
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "eventdemo"
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["password"] == "node-secret"
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
        assert sentinel["password"] == "sentinel-secret"
    # The request path: every socket operation, the Sentinels' included, bounded; nothing retried.
    kwargs = request.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 0
    for sentinel_client in request.connection_pool.sentinel_manager.sentinels:
        sentinel = sentinel_client.connection_pool.connection_kwargs
        assert sentinel["socket_timeout"] == sentinel["socket_connect_timeout"] == 0.25
        assert sentinel["retry"].get_retries() == 0
    # Workers keep redis-py's retries (they ride over the seconds of a failover) and a 5 s reply.
    assert worker.connection_pool.connection_kwargs["socket_timeout"] == 5.0
    assert "retry" not in worker.connection_pool.connection_kwargs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_SENTINELS": "127.0.0.1", "REDIS_SENTINEL_MASTER": "m"}, "is not host:port"),
        (
            {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "m", "CELERY_BROKER_URL": "redis://x:1/0"},
            "unset CELERY_BROKER_URL",
        ),
    ],
)
def test_the_settings_module_refuses_to_start_with_a_bad_sentinel_setting(env: dict[str, str], message: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CELERY_BROKER"))}
    environment.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    code = "import django; django.setup()"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and message in done.stderr
