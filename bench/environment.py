"""The benchmark's own world: a temporary directory, SQLite file, redis-server and key prefix.

``configure()`` sets the environment before Django reads its settings; every
process the benchmark starts inherits it. Nothing here touches the machine's
shared Redis or the project's ``var/``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import redis

PREFIX = "bench:"


@dataclass(frozen=True)
class BenchEnv:
    run_dir: Path
    redis_url: str
    prefix: str
    database_url: str

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"


def configure(run_dir: Path, redis_url: str, email_port: int, database_url: str | None = None) -> BenchEnv:
    """Point settings at the benchmark's own services; call before ``django.setup()``.

    The database is a new SQLite file in ``run_dir`` unless ``database_url`` names another.
    """
    database_url = database_url or f"sqlite:///{run_dir / 'bench.sqlite3'}"
    values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_KEY_PREFIX": PREFIX,
        "VAR_DIR": str(run_dir / "var"),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(email_port),
        "DJANGO_FAST_PASSWORD_HASHER": "1",
        # DEBUG off as in production: with it on, Django keeps every SQL query
        # in memory, which costs the side that runs more queries more.
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        # With DEBUG off there is no default host list and plain HTTP is
        # redirected to HTTPS; figure 1c posts through Django's test Client,
        # over plain HTTP to "testserver".
        "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        # Worker logs at WARNING on both sides: the figures measure the work, not log lines.
        "LOG_LEVEL": "WARNING",
        "SITE_URL": "http://127.0.0.1:8000",
        # The benchmark's site is local and plain HTTP; production refuses that unless told.
        "SITE_URL_ALLOW_HTTP": "1",
        # The provider's cluster-wide email rate limit (10/s by default) would
        # make figure 2 measure the limit; the benchmark measures the pipeline.
        "EMAIL_RATE_LIMIT": "100000/s",
        # Likewise the per-IP sign-up limit (10/m): figure 1c posts thousands
        # of sign-ups from one address. The limiter still runs, on both sides.
        "SIGNUP_RATE_LIMIT": "100000/s",
        "SIGNUP_RATE_BURST": "100000",
    }
    os.environ.update(values)
    for name in ("DATABASE_CONN_MAX_AGE", "CELERY_WORKER_PREFETCH_MULTIPLIER", "CELERY_VISIBILITY_TIMEOUT"):
        os.environ.pop(name, None)
    env = BenchEnv(run_dir=run_dir, redis_url=redis_url, prefix=PREFIX, database_url=database_url)
    env.log_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "var" / "static").mkdir(parents=True, exist_ok=True)  # STATIC_ROOT, which the middleware checks
    return env


def bare_env() -> dict[str, str]:
    """The environment of a bare worker (Celery or Dramatiq): the benchmark's, without DJANGO_SETTINGS_MODULE.

    With it, Celery's Django fix-up would set the project up inside the bare
    worker: its apps, its shared tasks joining the bare app, its signal
    handlers and per-task connection handling. Bare Celery is Celery without
    the project.
    """
    return {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def queue_depths(env: BenchEnv, queues: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting in each of ``queues`` (the broker's list under the benchmark's prefix)."""
    client = redis.Redis.from_url(env.redis_url)
    return {queue: int(client.llen(env.prefix + queue)) for queue in queues}


def purge_queues(env: BenchEnv, queues: tuple[str, ...]) -> int:
    """Delete the broker's lists of ``queues`` under the benchmark's prefix (nobody consumes them)."""
    client = redis.Redis.from_url(env.redis_url)
    keys: list[bytes] = []
    for queue in queues:
        keys += list(client.scan_iter(match=f"{env.prefix}{queue}*", count=1000))
    return int(client.delete(*keys)) if keys else 0
