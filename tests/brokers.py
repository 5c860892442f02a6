"""Pointing the Celery app at another broker for the length of a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from project.celery import app as celery_app


def _drop_connections() -> None:
    # Forget the app's pools without closing them: kombu keeps one pool per
    # broker URL, shared process-wide, and hands it back when the URL returns.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def using_broker(url: str) -> Iterator[None]:
    """Publish through ``url`` inside the block (connection pools are rebuilt on both sides)."""
    previous = celery_app.conf.broker_url
    previous_env = os.environ.get("CELERY_BROKER_URL")
    _drop_connections()
    # Celery reads CELERY_BROKER_URL from the environment before its own config.
    os.environ["CELERY_BROKER_URL"] = url
    celery_app.conf.broker_url = url
    try:
        yield
    finally:
        _drop_connections()
        celery_app.conf.broker_url = previous
        if previous_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = previous_env


def dead_broker_url() -> str:
    """A broker URL of the configured kind where nothing listens."""
    from devinbox.sink import free_port

    port = free_port()
    if str(celery_app.conf.broker_url).startswith("amqp"):
        return f"amqp://guest:guest@127.0.0.1:{port}//"
    return f"redis://127.0.0.1:{port}/0"
