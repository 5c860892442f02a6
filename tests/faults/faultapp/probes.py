"""Names, keys and policies of the fault subscribers, importable without declaring them.

The test process imports this module, never ``subscribers`` (whose import would
register the subscribers there too); the worker subprocesses import both.
"""

from __future__ import annotations

from eventbus.redis import client, key

PERMANENT = "faults.always_permanent"
TRANSIENT = "faults.always_transient"
FRAGILE = "faults.fragile"
# Kills its own process on every attempt (a segfaulting library): dead-lettered by EVENTBUS_MAX_DELIVERIES.
KILLER = "faults.kills_its_process"
# The stubborn probe's event type (declared in events.py, which the test process must not import).
STUBBORN = "faults.stubborn"
STUBBORN_SUBSCRIBER = "faults.stubborn_once"
# Its limits: the soft one is ignored on the first attempt, so the hard one kills it.
STUBBORN_SOFT_LIMIT = 0.5
STUBBORN_HARD_LIMIT = 1.5

# Four retries whose ceilings (base * 2**n, capped) are 0.25, 0.5, 1.0 and 1.0 s: they
# grow, then meet the cap. The cap stays below the workers' visibility timeout.
TRANSIENT_MAX_RETRIES = 4
TRANSIENT_BASE_DELAY = 0.25
TRANSIENT_MAX_DELAY = 1.0


def attempts_key(subscriber_name: str, event_id: object) -> str:
    return key("faults", "attempts", subscriber_name, str(event_id))


def effects_key(subscriber_name: str) -> str:
    return key("faults", "effects", subscriber_name)


def broken_flag() -> str:
    """While this key exists, FRAGILE fails permanently (a bug not yet fixed)."""
    return key("faults", "broken", FRAGILE)


def record_attempt(subscriber_name: str, event_id: object) -> None:
    """Note an attempt, on the Redis server's clock, so that every process agrees on the time."""
    seconds, micros = client().time()
    client().rpush(attempts_key(subscriber_name, event_id), f"{seconds}.{micros:06d}")


def attempts(subscriber_name: str, event_id: object) -> list[float]:
    return [float(t) for t in client().lrange(attempts_key(subscriber_name, event_id), 0, -1)]


def effects(subscriber_name: str, event_id: object) -> int:
    return int(client().hget(effects_key(subscriber_name), str(event_id)) or 0)


def killed_key(event_id: object) -> str:
    return key("faults", "killed", str(event_id))


def killed_pids(event_id: object) -> list[int]:
    """The pool processes KILLER killed for this event (it notes its pid before it dies)."""
    return [int(pid) for pid in client().lrange(killed_key(event_id), 0, -1)]
