"""A worker's database connections between tasks (eventbus/fastpath/dbconnections.py), on the test database."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from eventbus.fastpath import dbconnections

# A real connection, used by several "tasks" in a row, as a pool process uses it.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def use() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_a_connection_that_just_ended_a_task_cleanly_is_not_health_checked_again() -> None:
    assert connection.health_check_enabled  # conn_health_checks=True, as the settings have it
    use()
    dbconnections.tidy()  # the end of a task

    dbconnections.tidy()  # the start of the next, a moment later

    assert connection.health_check_done
    opened = connection.connection
    use()
    assert connection.connection is opened


def test_an_idle_connection_is_health_checked_before_its_next_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbconnections, "HEALTH_CHECK_AFTER_IDLE", 0.0)
    use()
    dbconnections.tidy()

    dbconnections.tidy()

    assert not connection.health_check_done  # Django checks it at its next use
    use()
    assert connection.health_check_done


def test_a_connection_that_saw_an_error_is_checked_as_django_checks_it() -> None:
    use()
    dbconnections.tidy()
    connection.errors_occurred = True  # a query failed in the task

    dbconnections.tidy()

    # Django asked the server (is_usable) and, the connection answering, cleared the error
    assert not connection.errors_occurred and connection.health_check_done
    use()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="ending a server session is PostgreSQL's")
def test_a_connection_the_server_ended_fails_one_task_and_the_next_task_gets_a_fresh_one() -> None:
    import psycopg

    use()
    dbconnections.tidy()  # a task ended cleanly a moment ago: its next use is not health-checked
    server_pid = connection.connection.info.backend_pid
    # What a restart (or a failover) does to every session: the server ends it.
    with psycopg.connect(**connection.get_connection_params()) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (server_pid,))
    dbconnections.tidy()  # the next task's start

    # that task fails (and is retried: tests/delivery/test_database_unavailable.py), the worker lives on
    with pytest.raises(OperationalError):
        use()
    dbconnections.tidy()  # its end: the broken connection is closed

    use()  # the task after it
    assert connection.connection.info.backend_pid != server_pid
