"""The catalogue of event types: one source of truth for names, versions and payload shapes.

A producer declares each event it emits as a frozen dataclass::

    @event_type("user.signed_up", version=1)
    @dataclass(frozen=True)
    class UserSignedUp:
        user_id: int

Consumers refer to the type by its name only, never to the producer's module;
the bus decodes the payload into the declared dataclass for them.

A payload change that an old message cannot satisfy is a new version, with an
upcaster from the one before, so that messages already queued, outbox rows
not yet sent and dead letters waiting for replay still decode::

    @event_type("user.signed_up", version=2)
    @dataclass(frozen=True)
    class UserSignedUp:
        user_id: int
        channel: str

    @upcaster("user.signed_up", from_version=1)
    def _channel_was_the_web_form(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "channel": "web"}

Each upcaster turns version N's payload into N+1's; the bus runs the chain
from the message's version to the current one, so a consumer only ever sees
the current payload class. Every type's chain starts at version 1 (``check``,
at start): a new type is declared at version 1.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eventbus.contract.errors import EventDeclarationError, PoisonMessage

P = TypeVar("P")

#: Turns one version's payload (its JSON object) into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

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

    def upcast(self, version: int, raw: Any) -> Any:
        """Version ``version``'s payload as the current version's, through each upcaster in turn.

        Raises PoisonMessage for a version no chain reaches, and for an
        upcaster that fails or returns something other than an object: a bad
        upcaster dead-letters the messages it cannot read, it never crashes
        the worker. The chain starts from a deep copy, so that an upcaster
        that edits its argument cannot change the stored body (an outbox row's
        payload, a dead letter's body) the message was read from.
        """
        if version == self.version:
            return raw
        if not 1 <= version < self.version:
            readable = f"versions 1 to {self.version}" if self.version > 1 else "version 1"
            raise PoisonMessage(f"unsupported schema version {version} of {self.name} (this code reads {readable})")
        if not isinstance(raw, dict):
            raise PoisonMessage(f"payload of {self.name} v{version} is {type(raw).__name__}, not an object")
        raw = copy.deepcopy(raw)
        for step in range(version, self.version):
            function = _upcasters.get((self.name, step))
            if function is None:
                raise PoisonMessage(f"no upcaster turns version {step} of {self.name} into version {step + 1}")
            named = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}"
            where = f"upcaster {named} ({self.name} v{step} to v{step + 1})"
            try:
                raw = function(raw)
            except Exception as exc:  # an upcaster's bug is this message's poison, never the worker's crash
                raise PoisonMessage(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(raw, dict):
                raise PoisonMessage(f"{where} returned {type(raw).__name__}, not an object")
        return raw


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
_upcasters: dict[tuple[str, int], Upcaster] = {}


def event_type(name: str, *, version: int = 1) -> typing.Callable[[type[P]], type[P]]:
    """Declare a payload dataclass as the schema of event type ``name``."""

    def register(cls: type[P]) -> type[P]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise EventDeclarationError(f"{cls.__name__}: an event payload must be a frozen dataclass")
        if name in _by_name and _by_name[name].payload_class is not cls:
            raise EventDeclarationError(f"event type {name!r} is declared twice")
        if version < 1:
            raise EventDeclarationError(f"event type {name!r}: version {version} is below 1")
        beyond = sorted(v for (n, v) in _upcasters if n == name and v >= version)
        if beyond:
            raise EventDeclarationError(
                f"event type {name!r} is at version {version}, but an upcaster starts from version {beyond[0]}"
            )
        declared = EventType(name=name, version=version, payload_class=cls)
        _by_name[name] = declared
        _by_class[cls] = declared
        return cls

    return register


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Declare ``function(payload) -> payload`` as the step from version ``from_version`` of ``name`` to the next.

    An upcaster is pure: it reads the old payload's JSON object and returns
    the next version's, with no I/O (it runs on every read of an old message).
    """

    def register(function: Upcaster) -> Upcaster:
        if from_version < 1:
            raise EventDeclarationError(f"upcaster of {name!r}: from_version {from_version} is below 1")
        existing = _upcasters.get((name, from_version))
        if existing is not None and existing is not function:
            raise EventDeclarationError(f"two upcasters of {name!r} from version {from_version}")
        declared = _by_name.get(name)
        if declared is not None and from_version >= declared.version:
            raise EventDeclarationError(
                f"upcaster of {name!r} from version {from_version}: the type's current version is "
                f"{declared.version}, so there is no version {from_version + 1} to turn it into"
            )
        _upcasters[(name, from_version)] = function
        return function

    return register


def check() -> None:
    """Every upcaster belongs to a declared type; every type's chain runs from version 1 to its current one.

    Run at start (eventbus/apps.py), once every ``events`` module is
    imported: a version bumped without its upcaster would otherwise make
    every older message poison, found only when one arrives.
    """
    for name, from_version in sorted(_upcasters):
        if name not in _by_name:
            raise EventDeclarationError(f"upcaster of undeclared event type {name!r} (from version {from_version})")
    for declared in all_types():
        missing = [v for v in range(1, declared.version) if (declared.name, v) not in _upcasters]
        if missing:
            raise EventDeclarationError(
                f"event type {declared.name!r} is at version {declared.version} but no upcaster starts from "
                f"version {', '.join(map(str, missing))}: declare @upcaster({declared.name!r}, from_version=N) "
                "for each, or older messages of it are poison"
            )


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
