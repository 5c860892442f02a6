"""``python -m tests.scaleout.worker <celery worker arguments>``: the project's worker, sweeping sooner.

A live worker puts a dead worker's unacknowledged Redis messages back on their
queue in a periodic sweep. kombu 5.7 runs it every ``unacked_restore_interval``
(10 s) seconds and scans only on every ``unacked_restore_throttle``-th (10th)
run, so with the project's settings (which set neither) a message comes back
``CELERY_VISIBILITY_TIMEOUT`` plus up to ~100 s after it was taken. This test
lowers the visibility timeout to seconds, so it also makes the sweep scan every
``SCALEOUT_RESTORE_SWEEP`` seconds (default 1); ``SCALEOUT_RESTORE_SWEEP=kombu``
keeps kombu's defaults, to measure what the project's settings give.

``SCALEOUT_BRPOP_TIMEOUT`` (seconds) makes each ``BRPOP`` wait that long in
Redis instead of kombu's 1 s (kombu's ``polling_interval`` transport option),
so that a test can cut a host's link while it certainly has one waiting.

Everything else is ``celery -A project worker``: the same app, settings and signals.
"""

from __future__ import annotations

import os
import sys

from project.celery import app

RESTORE_SWEEP = os.environ.get("SCALEOUT_RESTORE_SWEEP", "1")
BRPOP_TIMEOUT = os.environ.get("SCALEOUT_BRPOP_TIMEOUT")


def main(argv: list[str]) -> None:
    if RESTORE_SWEEP != "kombu":
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "unacked_restore_interval": float(RESTORE_SWEEP),
            "unacked_restore_throttle": 1,
        }
    if BRPOP_TIMEOUT:
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options,
            "polling_interval": float(BRPOP_TIMEOUT),
        }
    app.worker_main(["worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
