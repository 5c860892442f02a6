"""The lab's PostgreSQL cluster (lab/failover/postgres.py): its own port and data, faults that really
stop the server, committed rows that survive a crash-like stop, and a teardown that leaves nothing running."""

from __future__ import annotations

import socket

import psycopg
import pytest

from lab.failover.postgres import PostgresCluster, process_gone

pytestmark = [pytest.mark.timeout(120)]


def answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def connect(cluster: PostgresCluster) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(cluster.url.replace("postgres://", "postgresql://", 1), connect_timeout=5)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_stopped_server_refuses_and_a_started_one_still_holds_what_was_committed(
    mode: str, cluster: PostgresCluster
) -> None:
    assert cluster.port != 5432 and cluster.env() == {"DATABASE_URL": cluster.url}
    with connect(cluster) as db:
        assert db.execute("SHOW fsync").fetchone() == ("on",)
        db.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        db.execute("INSERT INTO kept VALUES (1)")
    first_pid = cluster.postmaster_pid()

    cluster.stop_server(mode)

    assert not cluster.running() and cluster.postmaster_pid() is None and not answers(cluster.port)
    with pytest.raises(psycopg.OperationalError):
        connect(cluster)

    cluster.start_server()

    assert cluster.postmaster_pid() not in (None, first_pid)
    with connect(cluster) as db:
        assert db.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    print(f"[postgres cluster] {mode} restart: start took {cluster.start_seconds[-1]:.2f}s")


def test_teardown_leaves_nothing_running(cluster: PostgresCluster) -> None:
    pid = cluster.postmaster_pid()
    assert pid is not None and answers(cluster.port)

    cluster.stop()

    assert not answers(cluster.port)
    assert process_gone(pid)
