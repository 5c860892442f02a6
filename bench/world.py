"""The benchmark's world as one context manager: its own redis-server, SMTP sink and database.

``python -m bench.run`` uses it for the whole run; a figure module's own
``__main__`` uses it to run that figure alone::

    with world() as (env, sink):
        figures = measure(env, sink, quick=True, say=print)
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.environment import BenchEnv, configure, setup_django
from bench.processes import start_redis, stop
from bench.sink import SinkProcess


@contextlib.contextmanager
def world(*, database_url: str | None = None, keep: bool = False, say=print) -> Iterator[tuple[BenchEnv, SinkProcess]]:
    """Start the services, point the settings at them, set Django up; stop and delete all of it after."""
    run_dir = Path(tempfile.mkdtemp(prefix="eventdemo-bench-"))
    with contextlib.ExitStack() as cleanup:
        if keep:
            say(f"keeping {run_dir}")
        else:
            cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
        redis_process, redis_url = start_redis(run_dir / "redis")
        cleanup.callback(stop, redis_process)
        sink = SinkProcess()
        cleanup.callback(sink.close)
        env = configure(run_dir, redis_url, sink.port, database_url)
        say(f"redis-server at {redis_url}, SMTP sink on port {sink.port}, database {env.database_url}")
        setup_django()
        yield env, sink
