"""The progress bar of the bus's commands (eventbus/management/progress.py): a bar on a terminal,
a summary line anywhere else; wired into relay_outbox and deadletters."""

from __future__ import annotations

import io
import os
import select
from typing import Any

import pytest
from django.core.management import call_command

from eventbus.management.progress import ProgressBar
from eventbus.models import DeadLetter, OutboxEvent
from eventbus.outbox.publish import publish
from signups.events import UserSignedUp
from tests.brokers import dead_broker_url, using_broker
from tests.deadletters.test_deadletters import dead_letter


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_it_redraws_in_place_then_leaves_the_summary() -> None:
    # given
    out, clock = Terminal(), Clock()
    bar = ProgressBar(4, label="work", stream=out, clock=clock)

    # when: two steps within the redraw interval, one after it
    bar.advance()
    bar.advance()
    clock.now += 1.0
    bar.advance()
    bar.finish("all done")

    # then: two drawings (the second step was too soon), the line erased, the summary
    text = out.getvalue()
    drawings = text.split("\r")[1:-1]
    assert len(drawings) == 2
    assert drawings[0].startswith("work  [" + "#" * 7 + "-" * 23 + "] 1/4  25%")
    assert drawings[1].startswith("work  [" + "#" * 22 + "-" * 8 + "] 3/4  75%")
    assert "eta" in drawings[1]
    assert text.endswith("\r\x1b[Kall done\n")


def test_anywhere_else_it_prints_only_the_summary_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(3, label="work", stream=out, clock=clock)

    for _ in range(3):
        clock.now += 1.0
        bar.advance()
    bar.finish()

    assert out.getvalue() == "work: 3 of 3 in 3.0s\n"


def read_all(fd: int) -> str:
    """Everything the terminal holds: a pty hands it out in pieces, so read until it stays empty."""
    chunks: list[bytes] = []
    while select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_it_draws_on_a_real_pseudo_terminal() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as tty:
            bar = ProgressBar(None, label="count", stream=tty)
            bar.advance(5)
            bar.finish("five")
        written = read_all(master)
    finally:
        os.close(master)
        os.close(slave)

    assert bar.tty
    assert written.startswith("\rcount  5 done")
    assert written.endswith("five\r\n")  # the terminal turns "\n" into "\r\n"


def test_a_count_above_the_estimate_raises_the_total() -> None:
    bar = ProgressBar(1, label="x", stream=io.StringIO())
    bar.advance(3)
    assert bar.total == 3


# --- the commands -------------------------------------------------------------------


@pytest.fixture
def stranded(broker: None) -> list[str]:
    """Three events committed while the broker was down."""
    with using_broker(dead_broker_url()):
        return [str(publish(UserSignedUp(user_id=n, channel="web"), aggregate=f"user:{n}").id) for n in (1, 2, 3)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_relay_outbox_draws_on_a_terminal(stranded: list[str]) -> None:
    out = Terminal()

    call_command("relay_outbox", grace=0, stdout=out)

    text = out.getvalue()
    assert "\rrelay  [" + "#" * 30 + "] 3/3 100%" in text
    assert text.endswith(
        "\r\x1b[Kdispatched 3 of 3 waiting events; 0 deferred (queue above its high-water mark); 0 still waiting\n"
    )
    assert not OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_relay_outbox_prints_its_summary_alone_elsewhere(stranded: list[str]) -> None:
    out = io.StringIO()

    call_command("relay_outbox", grace=0, stdout=out)

    assert out.getvalue() == (
        "dispatched 3 of 3 waiting events; 0 deferred (queue above its high-water mark); 0 still waiting\n"
    )


@pytest.mark.django_db
def test_deadletters_purge_draws_on_a_terminal() -> None:
    for n in range(3):
        dead_letter(task_id=f"t-{n}")
    out = Terminal()

    call_command("deadletters", "purge", "--all", "--yes", stdout=out)

    assert "\rpurge  [" + "#" * 30 + "] 3/3 100%" in out.getvalue()
    assert out.getvalue().endswith("\r\x1b[Kpurged 3 dead letters\n")
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
def test_deadletters_replay_draws_on_a_terminal_and_reports_as_before(broker: None, settings: Any) -> None:
    ids = [str(dead_letter(task_id=f"t-{n}").id) for n in range(2)]
    on_terminal, elsewhere = Terminal(), io.StringIO()

    call_command("deadletters", "replay", "--all", "--dry-run", stdout=on_terminal)
    call_command("deadletters", "replay", "--all", "--dry-run", stdout=elsewhere)

    # the first dead letter draws at once; the second comes within the redraw interval
    assert "\rreplay  [" + "#" * 15 + "-" * 15 + "] 1/2  50%" in on_terminal.getvalue()
    lines = elsewhere.getvalue().splitlines()
    assert len(lines) == 3 and all(any(i in line for line in lines) for i in ids)
    assert lines[-1].startswith("dry run: 2 of 2 dead letters would be replayed")
    assert on_terminal.getvalue().endswith("\r\x1b[K" + elsewhere.getvalue())
