"""A PostgreSQL restart under load loses nothing and needs no process restarted.

The whole system runs on a PostgreSQL cluster of its own (lab/failover/postgres.py), a Redis of its own
and an SMTP sink: the web under gunicorn, prefork workers for every queue, and beat, each a real
subprocess. Sign-ups go through the form over HTTP (CSRF included) from a thread, without pause, while
the server is stopped (``fast``: a clean shutdown; ``immediate``: crash-like, the WAL replayed at start)
for a few seconds and started again. Then:

- while it was down, sign-ups were answered 503 with ``Retry-After`` and the page saying to try again,
  ``/healthz`` answered 200 and ``/readyz`` 503 naming the database (200 again once it is back);
- every committed sign-up (a ``user.signed_up`` row in the outbox, read from the database afterwards,
  whatever its request was answered) got exactly one welcome email (by Message-ID) and one analytics row,
  and nothing is dead-lettered;
- the relay and the reconciler ran after the restart, and the web, workers and beat are the processes
  that were started (same pids, alive): none was restarted by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devinbox.sink import free_port
from lab.failover.postgres import PostgresCluster
from tests.conftest import wait_for
from tests.failover.postgres_system import (
    UNDISPATCHED,
    SignUps,
    System,
    analytics_event_ids,
    committed_events,
    count,
    dead_letters,
    housekeeping_runs,
    settled,
    timeline_steps,
)
from tests.faults.harness import FAULT_ENV
from tests.faults.processes import PrivateRedis, Workers
from tests.faults.provider import ProviderSink

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]

DOWN_FOR = 4.0
"""Seconds the server stays stopped: several sign-ups and deliveries fall inside."""
SYSTEM_ENV = {
    **FAULT_ENV,
    # Sign-ups come from one address, faster than a person: no throttle here.
    "SIGNUP_RATE_LIMIT": "1000/s",
    "SIGNUP_RATE_BURST": "1000",
    "DJANGO_FAST_PASSWORD_HASHER": "1",
    # A failure while the database is down is retried with backoff, and the retries must outlast the outage
    # (crash recovery included) or the delivery is dead-lettered (retries_exhausted). FAULT_ENV's delays
    # (0.2 s, at most 2 s) spend eight retries in about 6 s; here twenty at 0.5 s, at most 3 s: about 27 s.
    # The defaults, eight at 2 s up to 600 s, spend about 4 minutes.
    "EVENTBUS_RETRY_MAX_RETRIES": "20",
    "EVENTBUS_RETRY_BASE_DELAY": "0.5",
    "EVENTBUS_RETRY_MAX_DELAY": "3",
    # Housekeeping often enough to see it run after the restart within the test.
    "EVENTBUS_RELAY_INTERVAL": "1",
    "EVENTBUS_RELAY_GRACE": "1",
    "EVENTBUS_RECONCILE_INTERVAL": "2",
    "EVENTBUS_BROKER_CHECK_INTERVAL": "2",
}
PROVIDER_LATENCY = 0.25
"""Seconds the SMTP provider takes per email: two sends at a time, fewer per second than the sign-ups."""


@pytest.fixture
def system(cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[System]:
    log_dir = Path(tempfile.mkdtemp(prefix="eventdemo-pg-logs-"))
    redis_server = PrivateRedis(port=free_port(), directory=log_dir / "redis")
    redis_server.start()
    with ProviderSink() as sink:
        env = dict(os.environ)
        env |= cluster.env() | SYSTEM_ENV
        env |= {"REDIS_URL": redis_server.url, "CELERY_BROKER_URL": redis_server.url}
        env |= {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(sink.port)}
        running = System(env, redis_server.url, log_dir, Workers(env, log_dir), sink)
        try:
            running.start()
            yield running
        finally:
            running.processes.stop_all()
            redis_server.kill()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(running.processes.logs())
            shutil.rmtree(log_dir, ignore_errors=True)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_under_load_loses_nothing_and_restarts_no_process(
    mode: str, cluster: PostgresCluster, system: System
) -> None:
    sink = system.sink
    # A provider slower than the sign-ups: emails are queued and mid-send when the database goes away.
    sink.latency = PROVIDER_LATENCY
    pids = system.pids()
    server_pid = cluster.postmaster_pid()
    load = SignUps(system.base_url)
    load.start()
    try:
        wait_for(lambda: sum(a.status == 302 for a in load.answers) >= 10, timeout=60, what="sign-ups before")

        # when: the server stops under load, stays down, and starts again
        cluster.stop_server(mode)
        stopped_at, stopped_wall = time.monotonic(), time.time()
        assert cluster.postmaster_pid() is None
        wait_for(lambda: any(a.at > stopped_at + 1 for a in load.answers), timeout=30, what="a sign-up while down")
        # the probes say the truth: alive (nothing to restart), not ready (send no traffic here)
        assert requests.get(f"{system.base_url}/healthz", timeout=10).status_code == 200
        ready = requests.get(f"{system.base_url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["database"] != "ok" and ready.json()["broker"] == "ok"
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - stopped_at)))
        starting_at = time.monotonic()
        cluster.start_server()
        started_at, started_wall = time.monotonic(), time.time()
        housekeeping_before = housekeeping_runs(system)
        assert cluster.postmaster_pid() not in (None, server_pid), "the server did not restart"
        wait_for(
            lambda: any(a.status == 302 and a.at > started_at for a in load.answers),
            timeout=60,
            what="a sign-up committed after the restart",
        )
        first_after = min(a.at for a in load.answers if a.status == 302 and a.at > started_at) - started_at
        wait_for(lambda: sum(a.at > started_at for a in load.answers) >= 10, timeout=60, what="sign-ups after")
        assert requests.get(f"{system.base_url}/readyz", timeout=10).status_code == 200
    finally:
        load.stop()

    # then: while it was down, a clear answer
    down = [a for a in load.answers if stopped_at + 0.5 < a.at < starting_at]
    assert down, "no sign-up was answered while the database was down"
    assert {a.status for a in down} == {503}, Counter(a.status for a in down)
    unclear = [a for a in down if not (a.retry_after == "10" and a.says_try_again)]
    assert not unclear, unclear[:3]
    assert not load.errors, load.errors[:5]
    assert Counter(a.status for a in load.answers).keys() <= {302, 503}, Counter(a.status for a in load.answers)

    # and: every committed sign-up done exactly once (welcome email by Message-ID, analytics row), every outbox
    # row dispatched (a mark the outage cost is the relay's to send again), every message settled
    def all_done() -> bool:
        events = committed_events(cluster.url)
        mails = {m.message_id for m in sink.messages}
        rows = count(cluster.url, "SELECT count(*) FROM analytics_analyticsevent WHERE type = 'user.signed_up'")
        emailed = all(f"<welcome.{e}@testserver>" in mails for e in events)
        return emailed and rows >= len(events) and count(cluster.url, UNDISPATCHED) == 0 and settled(system)

    wait_for(all_done, timeout=90, interval=0.5, what="every committed sign-up delivered and every message settled")
    drained = time.monotonic() - started_at
    events = committed_events(cluster.url)
    arrivals = Counter(m.message_id for m in sink.messages)
    expected = {f"<welcome.{e}@testserver>" for e in events}
    doubled = sum(n - 1 for mid, n in arrivals.items() if mid in expected)
    strays = [mid for mid in arrivals if mid.startswith("<welcome.") and mid not in expected]
    rows = count(cluster.url, "SELECT count(*) FROM analytics_analyticsevent WHERE type = 'user.signed_up'")
    doubled += rows - len(set(analytics_event_ids(cluster.url)))
    letters = count(cluster.url, "SELECT count(*) FROM eventbus_deadletter")
    users = count(cluster.url, "SELECT count(*) FROM auth_user")
    steps = dict(timeline_steps(cluster.url))
    # From the workers' logs: the timeline's own "retried" rows could not be written while the database was away.
    workers_log = system.log("mail") + system.log("analytics")
    retried = len(re.findall(r"; retry \d+/\d+ in ", workers_log))
    kept = workers_log.count("failed (LedgerNotWritten")
    first_mail = min((m.at for m in sink.messages if m.at > started_wall), default=float("nan")) - stopped_wall
    committed_302 = sum(a.status == 302 for a in load.answers)
    print(
        f"[postgres {mode}] committed={len(events)} (answered 302: {committed_302}; 503: "
        f"{sum(a.status == 503 for a in load.answers)}) emailed={len(expected & arrivals.keys())} recorded={rows} "
        f"doubled={doubled} dead_letters={letters} retried={retried} sent_not_recorded={kept} "
        f"absorbed={steps.get('duplicate', 0)} redelivered={steps.get('redelivered', 0)} "
        f"refused_for={max(a.at for a in down) - min(a.at for a in down):.1f}s "
        f"start_took={cluster.start_seconds[-1]:.2f}s "
        f"fault_to_first_delivery={first_mail:.1f}s first_commit_after_start={first_after:.2f}s "
        f"drained_after_start={drained:.1f}s"
    )
    assert doubled == 0 and not strays, (doubled, strays[:5])
    assert rows == len(events) == users >= committed_302
    assert letters == 0, dead_letters(cluster.url)

    # and: the relay and the reconciler ran after the restart, and no process was restarted
    wait_for(
        lambda: all(n > housekeeping_before[task] for task, n in housekeeping_runs(system).items()),
        timeout=30,
        what="the relay and the reconciler succeeding after the restart",
    )
    assert system.pids() == pids, (pids, system.pids())
    # and the housekeeping runs that met the outage said so in a line each, not an ERROR with a traceback
    assert "raised unexpected: OperationalError" not in system.log("housekeeping")
