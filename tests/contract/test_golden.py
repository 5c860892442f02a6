"""Golden samples guard every published version: each still decodes, and a new version brings its sample.

A version is published once a producer could have sent it, so its messages may
still wait in a queue, an outbox row or a dead letter (tests/contract/golden/).
This test reads every sample through ``Envelope.from_dict``, the decoder every
consumer uses, and fails when

- a payload class changes in a way an old sample no longer satisfies (a field
  added without a default, renamed, retyped) and no upcaster turns the old
  version into the new one: bump the version and declare
  ``@upcaster(name, from_version=N)``;
- a type's version rises with no sample of the new version: the failure names
  the file to add, ``tests/contract/golden/<type>/v<N>.json`` (a whole envelope
  in ``Envelope.to_dict()``'s form);
- a sample names a type or version this code does not declare.

Samples are never edited once published: a new version gets a new file. The
throwaway types below show the failures on purpose, in a scratch catalogue.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from eventbus.contract import catalogue
from eventbus.contract.catalogue import event_type, upcaster
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from tests.contract import golden
from tests.contract.scratch import scratch

Samples = dict[tuple[str, int], dict[str, Any]]


def problems(samples: Samples, types: list[catalogue.EventType]) -> list[str]:
    """What the golden samples say is broken in the catalogue ``types``; empty when every version is safe."""
    found: list[str] = []
    declared = {t.name: t for t in types}
    for t in types:
        for version in range(1, t.version + 1):
            if (t.name, version) not in samples:
                found.append(
                    f"{t.name} v{version} has no golden sample: add tests/contract/golden/{t.name}/v{version}.json"
                )
    for (name, version), wire in sorted(samples.items()):
        t = declared.get(name)
        if t is None or version > t.version:
            found.append(f"golden sample {name}/v{version}.json names a type or version this code does not declare")
            continue
        try:
            decoded = Envelope.from_dict(copy.deepcopy(wire))
        except PoisonMessage as exc:
            found.append(f"golden sample {name}/v{version}.json no longer decodes: {exc}")
            continue
        if not isinstance(decoded.payload, t.payload_class) or decoded.version != t.version:
            found.append(f"golden sample {name}/v{version}.json decodes to {decoded.version}, not {t.version}")
        elif version == t.version and decoded.to_dict() != wire:
            found.append(f"golden sample {name}/v{version}.json does not round-trip through the current class")
    return found


def test_every_published_version_has_a_sample_that_decodes_into_the_current_payload_class() -> None:
    assert problems(golden.samples(), catalogue.all_types()) == []


def test_user_signed_up_has_two_versions_and_the_first_still_reads_as_the_second() -> None:
    old = Envelope.from_dict(golden.samples()[("user.signed_up", 1)])
    assert (old.version, old.payload.user_id, old.payload.channel) == (2, 42, "web")


# --- the guard, shown on a throwaway type --------------------------------------

PROBE = "tests.golden_probe"
PUBLISHED_V1 = {
    "id": "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "type": PROBE,
    "version": 1,
    "occurred_at": "2026-12-07T09:00:00Z",
    "aggregate": "probe:1",
    "sequence": 1,
    "correlation_id": "golden",
    "causation_id": None,
    "payload": {"size": 3},
}


def with_probe(*versions: dict[str, Any]) -> Samples:
    """This project's samples plus the probe's ``versions``."""
    return {**golden.samples(), **{(PROBE, v["version"]): v for v in versions}}


def test_the_probe_as_published_passes() -> None:
    with scratch():

        @event_type(PROBE, version=1)
        @dataclass(frozen=True)
        class Probe:
            size: int

        assert problems(with_probe(PUBLISHED_V1), catalogue.all_types()) == []


def test_changing_a_payload_class_without_an_upcaster_fails() -> None:
    with scratch():
        # when: a required field is added to version 1 in place
        @event_type(PROBE, version=1)
        @dataclass(frozen=True)
        class Probe:
            size: int
            colour: str

        # then: the published sample no longer decodes
        (found,) = problems(with_probe(PUBLISHED_V1), catalogue.all_types())
        assert found == f"golden sample {PROBE}/v1.json no longer decodes: payload of {PROBE} lacks fields: colour"


def test_a_new_version_without_its_sample_fails_naming_the_file_to_add() -> None:
    with scratch():

        @event_type(PROBE, version=2)
        @dataclass(frozen=True)
        class Probe:
            size: int
            colour: str

        @upcaster(PROBE, from_version=1)
        def _grey(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "colour": "grey"}

        # then: version 1 still decodes (through the upcaster), but version 2 has no sample
        assert problems(with_probe(PUBLISHED_V1), catalogue.all_types()) == [
            f"{PROBE} v2 has no golden sample: add tests/contract/golden/{PROBE}/v2.json"
        ]
        # and with it, all is well
        v2 = {**PUBLISHED_V1, "version": 2, "payload": {"size": 3, "colour": "red"}}
        assert problems(with_probe(PUBLISHED_V1, v2), catalogue.all_types()) == []


@pytest.mark.parametrize("version", [2, 7])
def test_a_sample_of_an_undeclared_version_fails(version: int) -> None:
    with scratch():

        @event_type(PROBE, version=1)
        @dataclass(frozen=True)
        class Probe:
            size: int

        stray = {**PUBLISHED_V1, "version": version}
        found = problems(with_probe(PUBLISHED_V1, stray), catalogue.all_types())
        assert found == [f"golden sample {PROBE}/v{version}.json names a type or version this code does not declare"]


def test_the_scratch_catalogue_leaves_no_probe_behind() -> None:
    assert PROBE not in {t.name for t in catalogue.all_types()}
    catalogue.check()
