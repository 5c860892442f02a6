"""The one event type of the fault tests: a probe sent to a single test subscriber."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.catalogue import event_type

PROBE = "faults.probe"


@event_type(PROBE, version=1)
@dataclass(frozen=True)
class FaultProbe:
    label: str
