"""The request path's fail-fast gate (eventbus/protection/failfast.py): after a failure, calls are not made for a
window; then one caller asks, alone; its answer closes or reopens the gate."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from eventbus.protection.failfast import FailFast, Unavailable

WINDOW = 0.3


class Down(Exception):
    """The service's failure, in these tests."""


@pytest.fixture
def gate(settings: Any) -> FailFast:
    settings.EVENTBUS_FAILFAST_SECONDS = WINDOW
    return FailFast("service", (Down,))


def fail(gate: FailFast) -> None:
    with pytest.raises(Down), gate.attempt():
        raise Down("timed out")


def test_a_closed_gate_runs_the_call_and_a_failure_opens_it(gate: FailFast) -> None:
    ran = []
    with gate.attempt():
        ran.append(1)
    assert ran == [1] and not gate.is_open()

    fail(gate)

    assert gate.is_open()


def test_an_open_gate_refuses_at_once_without_running_the_call(gate: FailFast) -> None:
    fail(gate)
    ran = []

    with pytest.raises(Unavailable), gate.attempt():
        ran.append(1)

    assert ran == []


def test_after_the_window_one_caller_asks_and_its_success_closes_the_gate(gate: FailFast) -> None:
    fail(gate)
    time.sleep(WINDOW * 1.5)
    assert not gate.is_open()
    probe_inside = threading.Event()
    release = threading.Event()
    others: list[str] = []

    def probe() -> None:
        with gate.attempt():
            probe_inside.set()
            release.wait(10)

    thread = threading.Thread(target=probe)
    thread.start()
    assert probe_inside.wait(10)
    # While the probe is out, the others still do not ask.
    try:
        with gate.attempt():
            others.append("asked")
    except Unavailable:
        others.append("refused")
    release.set()
    thread.join(10)

    assert others == ["refused"]
    assert not gate.is_open()
    with gate.attempt():
        others.append("asked")
    assert others == ["refused", "asked"]


def test_a_probe_that_fails_opens_the_gate_for_another_window(gate: FailFast) -> None:
    fail(gate)
    time.sleep(WINDOW * 1.5)

    fail(gate)

    assert gate.is_open()
    with pytest.raises(Unavailable), gate.attempt():
        pass


def test_an_error_that_is_not_the_services_leaves_the_gate_as_it_was(gate: FailFast) -> None:
    with pytest.raises(KeyError), gate.attempt():
        raise KeyError("a bug in the caller")
    assert not gate.is_open()

    fail(gate)
    time.sleep(WINDOW * 1.5)
    with pytest.raises(KeyError), gate.attempt():
        raise KeyError("a bug in the probe")

    # The probe's slot is free again: the next caller asks.
    with gate.attempt():
        pass
    assert not gate.is_open()


def test_a_window_of_zero_always_asks(gate: FailFast, settings: Any) -> None:
    settings.EVENTBUS_FAILFAST_SECONDS = 0.0
    fail(gate)

    with gate.attempt():
        pass

    assert not gate.is_open()
