"""A Celery worker whose pool processes run under cProfile: ``python -m bench.profiled_worker DIR ARGS``.

``ARGS`` are the ``celery`` command's own (``-A project worker ...``). Each pool
process writes ``DIR/worker-<pid>.prof`` when it shuts down warm.
"""

from __future__ import annotations

import cProfile
import os
import sys
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

_profiler: cProfile.Profile | None = None
_directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")


@worker_process_init.connect
def _start(**_: Any) -> None:
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


@worker_process_shutdown.connect
def _dump(**_: Any) -> None:
    if _profiler is not None:
        _profiler.disable()
        _profiler.dump_stats(_directory / f"worker-{os.getpid()}.prof")


def main() -> None:
    from celery.bin.celery import main as celery_main

    _directory.mkdir(parents=True, exist_ok=True)
    sys.argv = ["celery", *sys.argv[2:]]
    celery_main()


if __name__ == "__main__":
    main()
