"""The catalogue of event types: one source of truth for names, versions and payload shapes.

A producer declares each event it emits as a frozen dataclass::

    @event_type("user.signed_up", version=1)
    @dataclass(frozen=True)
    class UserSignedUp:
        user_id: int

Consumers refer to the type by its name only, never to the producer's module;
the bus decodes the payload into the declared dataclass for them.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from eventbus.contract.errors import EventDeclarationError, PoisonMessage

P = TypeVar("P")

_JSON_SCALARS: tuple[type, ...] = (str, int, float, bool)


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    payload_class: type

    def decode_payload(self, raw: Any) -> Any:
        """Build the typed payload from its JSON form, or raise PoisonMessage saying why."""
        if not isinstance(raw, dict):
            raise PoisonMessage(f"payload of {self.name} is {type(raw).__name__}, not an object")
        hints, fields = _shape(self.payload_class)
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise PoisonMessage(f"payload of {self.name} has unknown fields: {', '.join(unknown)}")
        missing = sorted(
            name
            for name, f in fields.items()
            if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise PoisonMessage(f"payload of {self.name} lacks fields: {', '.join(missing)}")
        for name, value in raw.items():
            expected = hints.get(name)
            if expected in _JSON_SCALARS and not _is_instance(value, expected):
                raise PoisonMessage(
                    f"payload field {self.name}.{name} is {type(value).__name__}, expected {expected.__name__}"
                )
        return self.payload_class(**raw)


@functools.cache
def _shape(payload_class: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A payload class's field types and fields, worked out once per class: resolving the
    annotations (strings, under ``from __future__ import annotations``) compiles each one,
    and every delivery decodes a payload."""
    return typing.get_type_hints(payload_class), {f.name: f for f in dataclasses.fields(payload_class)}


def _is_instance(value: Any, expected: type) -> bool:
    # JSON has no int/bool distinction worth trusting: True is not a user id.
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


_by_name: dict[str, EventType] = {}
_by_class: dict[type, EventType] = {}


def event_type(name: str, *, version: int = 1) -> typing.Callable[[type[P]], type[P]]:
    """Declare a payload dataclass as the schema of event type ``name``."""

    def register(cls: type[P]) -> type[P]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise EventDeclarationError(f"{cls.__name__}: an event payload must be a frozen dataclass")
        if name in _by_name and _by_name[name].payload_class is not cls:
            raise EventDeclarationError(f"event type {name!r} is declared twice")
        declared = EventType(name=name, version=version, payload_class=cls)
        _by_name[name] = declared
        _by_class[cls] = declared
        return cls

    return register


def get(name: str) -> EventType:
    try:
        return _by_name[name]
    except KeyError:
        raise PoisonMessage(f"unknown event type {name!r}") from None


def for_payload(payload: object) -> EventType:
    try:
        return _by_class[type(payload)]
    except KeyError:
        raise EventDeclarationError(
            f"{type(payload).__name__} is not a declared event payload; decorate it with @event_type"
        ) from None


def all_types() -> list[EventType]:
    return sorted(_by_name.values(), key=lambda t: t.name)
