"""The failover suite: real Sentinel, RabbitMQ and PostgreSQL topologies (lab/failover/).

It starts processes of its own and faults them, so it is a separate CI step,
``make test-failover``; ``make test`` leaves it out (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.failover.postgres import PostgresCluster


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the test's own (lab/failover/postgres.py), removed afterwards.

    Under /tmp, not pytest's tmp_path: the server runs as the postgres user, who cannot enter root's 0700 dirs.
    """
    directory = Path(tempfile.mkdtemp(prefix="eventdemo-pg-"))
    server = PostgresCluster(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
