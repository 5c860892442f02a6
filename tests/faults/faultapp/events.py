"""The event types of the fault tests: a probe sent to a single test subscriber, and a stubborn one."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.contract.catalogue import event_type
from tests.faults.faultapp.probes import STUBBORN

PROBE = "faults.probe"


@event_type(PROBE, version=1)
@dataclass(frozen=True)
class FaultProbe:
    label: str


@event_type(STUBBORN, version=1)
@dataclass(frozen=True)
class StubbornProbe:
    """For the subscriber that ignores its soft time limit on its first attempt."""

    label: str
