"""What a guard (or the effect) says about a delivery; only the pipeline acts on it.

- ``GO``: nothing stops it (after the effect: the effect happened);
- ``skip``: it ends here without an effect (a duplicate, a stale event);
- ``wait``: run it again in ``countdown`` seconds, using up no retry;
- ``dead_letter``: set the message aside now;
- ``fail``: the effect failed: retried with backoff while the retry policy
  allows and the failure is transient, dead-lettered otherwise;
- ``ALONE``: the batching consumer cannot apply it with the others (its
  aggregate's predecessor is in the same batch): it is delivered on its own,
  through the same pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from eventbus.deadletters import Kind


class Action(StrEnum):
    GO = "go"
    SKIP = "skip"
    WAIT = "wait"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"
    ALONE = "alone"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""
    """Why: a skip's timeline detail, a wait's reason."""
    counter: str = ""
    """The counter (eventbus/observability/counters.py) a skip or a wait adds one to."""
    status: str = ""
    """A skip's result status and timeline step (``duplicate``, ``stale``)."""
    message: str = ""
    """A skip's log line, after the subscriber and the event id."""
    countdown: float = 0.0
    kind: Kind | None = None
    error: BaseException | None = None
    transient: bool = False

    @property
    def goes_on(self) -> bool:
        return self.action is Action.GO


GO = Verdict(Action.GO)
ENDED = Verdict(Action.SKIP, reason="the delivery ended before its effect")
"""What the guards end with when a check raised: nothing of the effect happened."""
ALONE = Verdict(Action.ALONE, reason="an earlier event of its aggregate is in the same batch")


def skip(status: str, counter: str, reason: str, message: str) -> Verdict:
    return Verdict(Action.SKIP, reason=reason, counter=counter, status=status, message=message)


def wait(countdown: float, reason: str, counter: str) -> Verdict:
    return Verdict(Action.WAIT, reason=reason, counter=counter, countdown=countdown)


def dead_letter(kind: Kind, error: BaseException) -> Verdict:
    return Verdict(Action.DEAD_LETTER, kind=kind, error=error)


def fail(error: BaseException, *, transient: bool) -> Verdict:
    return Verdict(Action.FAIL, error=error, transient=transient)
