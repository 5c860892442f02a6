"""The stall verdict (eventbus/observability/stalls.py), the start check of its setting, and the progress records.

The verdict is a pure function; the records are written to and read from this
run's real Redis. A real worker that stalls: tests/observability/test_stalled_worker.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from eventbus.observability import progress
from eventbus.observability.progress import WorkerProgress
from eventbus.observability.stalls import judge
from eventbus.operations import checks
from eventbus.redis import client, key

NOW = 1_000_000.0
STALL_AFTER = 120.0


def worker(*, started: float = NOW - 3600, finished: float | None = None, queues: tuple[str, ...] = ("email",)) -> Any:
    return WorkerProgress("email@host-1", queues, started=started, seen=NOW, finished=finished)


def test_messages_waiting_and_nothing_finished_for_the_set_time_is_stalled() -> None:
    verdict = judge(worker(finished=NOW - 121), {"email": 7}, NOW, STALL_AFTER)
    assert verdict.stalled
    assert verdict.quiet_seconds == 121
    assert verdict.reason == (
        "stalled: email@host-1 finished no task for 121s (EVENTBUS_STALL_AFTER 120s) while messages wait in "
        "email (7 waiting)"
    )


def test_a_worker_that_finished_lately_is_healthy_though_messages_wait() -> None:
    verdict = judge(worker(finished=NOW - 5), {"email": 7}, NOW, STALL_AFTER)
    assert not verdict.stalled
    assert verdict.reason == "healthy: email@host-1 finished a task 5s ago"


def test_an_idle_worker_with_an_empty_queue_is_healthy_however_long_it_was_quiet() -> None:
    verdict = judge(worker(finished=NOW - 86_400), {"email": 0}, NOW, STALL_AFTER)
    assert not verdict.stalled
    assert verdict.reason.endswith("nothing waits in its queues")


def test_a_freshly_started_worker_is_not_stalled_until_the_set_time_from_its_start() -> None:
    assert not judge(worker(started=NOW - 119), {"email": 3}, NOW, STALL_AFTER).stalled
    late = judge(worker(started=NOW - 120), {"email": 3}, NOW, STALL_AFTER)
    assert late.stalled and "finished nothing for 120s" in late.reason


def test_a_finish_from_before_its_start_does_not_count_against_a_restarted_worker() -> None:
    assert not judge(worker(started=NOW - 10, finished=NOW - 500), {"email": 3}, NOW, STALL_AFTER).stalled


def test_a_burst_after_a_long_idle_spell_is_not_a_stall() -> None:
    # the worker found its queues empty 4 s ago (its last heartbeat), then messages came
    idle = WorkerProgress("email@host-1", ("email",), started=NOW - 3600, seen=NOW, finished=NOW - 3000, idle=NOW - 4)
    verdict = judge(idle, {"email": 500}, NOW, STALL_AFTER)
    assert not verdict.stalled and verdict.quiet_seconds == 4
    assert judge(idle, {"email": 500}, NOW + 120, STALL_AFTER).stalled


def test_only_the_workers_own_queues_count_and_each_backed_up_one_is_named() -> None:
    consumer = worker(finished=NOW - 200, queues=("analytics", "email", "telemetry"))
    verdict = judge(consumer, {"analytics": 2, "email": 0, "telemetry": 9, "other": 50}, NOW, STALL_AFTER)
    assert verdict.stalled
    assert verdict.waiting == {"analytics": 2, "email": 0, "telemetry": 9}
    assert verdict.reason.endswith("analytics (2 waiting), telemetry (9 waiting)")
    assert not judge(consumer, {"other": 50}, NOW, STALL_AFTER).stalled


@pytest.mark.parametrize(("stall_after", "refused"), [(90.0, True), (95.9, True), (96.0, False), (120.0, False)])
def test_the_setting_must_exceed_the_time_limit_by_a_heartbeat_and_the_write_interval(
    stall_after: float, refused: bool, settings: Any
) -> None:
    settings.EVENTBUS_TIME_LIMIT = 90.0
    settings.EVENTBUS_STALL_AFTER = stall_after
    found = [p for p in checks.improper(settings) if p.startswith("EVENTBUS_STALL_AFTER")]
    assert bool(found) is refused
    if refused:
        assert "must exceed EVENTBUS_TIME_LIMIT (90s) by at least 6s" in found[0]
        with pytest.raises(ImproperlyConfigured, match="EVENTBUS_STALL_AFTER"):
            checks.refuse_improper()


def test_the_default_setting_passes_the_worker_start_check(settings: Any) -> None:
    from project.celery import app

    assert settings.EVENTBUS_STALL_AFTER == 120.0
    assert not [p for p in checks.problems(app.conf) if "STALL" in p]
    assert checks.stall_problems(120.0, [("CELERY_TASK_TIME_LIMIT", 200.0)])


def test_a_record_is_read_back_and_expires(redis_prefix: str) -> None:
    # given: the main process's record of a worker, and one finish noted by another process
    state = progress._Process()
    state.node, state.started, state.duty = "w1@host-1", time.time() - 5, frozenset({"email", "analytics"})
    state.heartbeat()
    child = progress._Process()
    child.node, child.finished = "w1@host-1", time.time()
    child.write_finish()
    # then
    (found,) = progress.read()
    assert found.worker == "w1@host-1" and found.queues == ("analytics", "email")
    assert found.finished == pytest.approx(child.finished)
    assert progress.read(["gone@host-1"]) == []
    for name in (key("worker", "w1@host-1"), key("workers")):
        assert 0 < client().ttl(name) <= progress.RECORD_TTL


def test_noting_a_finish_is_cheap() -> None:
    # Measured: the per-delivery cost of the progress note, its thread started once.
    progress.finished("cost@host-1")
    rounds = 200_000
    started = time.perf_counter()
    for _ in range(rounds):
        progress.finished("cost@host-1")
    per_call = (time.perf_counter() - started) / rounds
    print(f"progress.finished: {per_call * 1e9:.0f} ns per call")
    assert per_call < 5e-6
