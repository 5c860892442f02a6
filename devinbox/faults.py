"""Failures of the email provider that a person can cause, as the dev SMTP sink plays them (DJANGO_DEBUG on).

Two kinds, both answered by the sink (devinbox/sink.py) as a real provider
would answer them, so the welcome email meets them exactly where it meets a
real provider's trouble:

- **Special addresses**, by their local part (``+anything`` may follow it, so
  that each sign-up has an address of its own: ``refuse+1@example.com``):

  ========== ==========================================================================
  ``refuse``  RCPT answered ``550`` on its first try: refused for good, so the email
              is dead-lettered at once. The mailbox exists by the time someone
              replays the dead letter: the replay is delivered.
  ``later``   RCPT answered ``451`` on its first LATER_REFUSALS tries, then taken: the
              email is retried with backoff and arrives on its own.
  ``slow``    DATA answered after SLOW_SECONDS: a long delivery, under EMAIL_TIMEOUT.
  ========== ==========================================================================

  The tries are counted per address by the sink process, in memory.

- **The provider down for N seconds** (at most MAX_SECONDS): every MAIL is
  answered ``451`` until the window ends or someone brings it back. Every
  email is retried with backoff; after EMAIL_BREAKER_FAILURE_THRESHOLD
  failures the circuit breaker opens, and its probe closes it once the window
  is over. The window is one Redis key with that expiry, under
  REDIS_KEY_PREFIX, so that the web process sets it and the sink process (a
  process of its own under `make run`) reads it, and it ends by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from django.conf import settings

log = logging.getLogger(__name__)

REFUSE, LATER, SLOW = "refuse", "later", "slow"
SPECIAL_LOCAL_PARTS = (REFUSE, LATER, SLOW)
LATER_REFUSALS = 3
"""Tries of a ``later@`` address answered 451 before it is taken."""
SLOW_SECONDS = 5.0
"""How long DATA waits for a ``slow@`` address; below EMAIL_TIMEOUT's default of 10 s."""
MAX_SECONDS = 600
"""The longest outage (or queue pause) the panel sets: whatever is caused ends within ten minutes."""

REFUSED_FOR_GOOD = "550 5.1.1 No such mailbox (classroom: refused for good; a replay is delivered)"
REFUSED_FOR_NOW = "451 4.2.1 Mailbox busy, try again later (classroom)"
PROVIDER_DOWN = "451 4.3.2 Provider down for {seconds} s more (classroom), try again later"


@dataclass(frozen=True)
class SpecialAddress:
    local_part: str
    behaviour: str


SPECIAL_ADDRESSES = (
    SpecialAddress(REFUSE, "refused for good (550) on its first try: a dead letter, which a replay delivers"),
    SpecialAddress(LATER, f"refused for now (451) on its first {LATER_REFUSALS} tries: retries with backoff"),
    SpecialAddress(SLOW, f"taken after {SLOW_SECONDS:g} s: a slow delivery"),
)
"""What the panel and the sign-up page's help list."""


def special_kind(address: str) -> str | None:
    """``refuse``, ``later`` or ``slow`` for such an address (``+tag`` allowed, any case), else None."""
    local = address.strip("<>").rpartition("@")[0] if "@" in address else ""
    base = local.partition("+")[0].lower()
    return base if base in SPECIAL_LOCAL_PARTS else None


# --- The provider's outage window, shared through Redis -------------------------------


def classroom_key(name: str) -> str:
    """A Redis key of the classroom's, under REDIS_KEY_PREFIX."""
    return f"{settings.REDIS_KEY_PREFIX}classroom:{name}"


def redis_client() -> redis.Redis:
    from eventbus.doors import request_client

    # Short timeouts, no retry: the sink asks on every MAIL, inside its event loop.
    return request_client()


def require_debug() -> None:
    """The classroom's failures exist only with DJANGO_DEBUG on: its tasks refuse otherwise (its views answer 404)."""
    if not settings.DEBUG:
        raise PermissionError("the classroom's failures exist only with DJANGO_DEBUG on")


def bounded(seconds: int) -> int:
    """``seconds`` within 1..MAX_SECONDS."""
    return max(1, min(int(seconds), MAX_SECONDS))


def take_provider_down(seconds: int) -> int:
    """The sink answers every MAIL with a 451 for ``seconds`` (bounded); returns the seconds set."""
    seconds = bounded(seconds)
    redis_client().set(classroom_key("provider_down"), "1", px=seconds * 1000)
    log.warning("classroom: the email provider (the dev SMTP sink) is down for %d s", seconds)
    return seconds


def bring_provider_back() -> None:
    redis_client().delete(classroom_key("provider_down"))
    log.warning("classroom: the email provider (the dev SMTP sink) is back")


def provider_down_for() -> float:
    """Seconds the outage has left; 0 when there is none, or when Redis cannot say (the sink then takes mail)."""
    try:
        left = int(redis_client().pttl(classroom_key("provider_down")))  # -2: no key; -1: no expiry (never set so)
    except redis.RedisError as exc:
        log.warning("classroom: cannot read the provider's outage window (%s); taking mail", exc)
        return 0.0
    return left / 1000 if left > 0 else 0.0


# --- What the sink asks -----------------------------------------------------------------


class SinkFaults:
    """The sink's side: the reply to refuse a command with, or how long to wait, for the failures above."""

    def __init__(self, outage: Callable[[], float] = provider_down_for) -> None:
        self.outage = outage
        self._tries: dict[str, int] = {}
        self._lock = threading.Lock()

    def mail_reply(self) -> str | None:
        """451 while the provider is down; None to take the MAIL."""
        left = self.outage()
        return PROVIDER_DOWN.format(seconds=max(1, round(left))) if left > 0 else None

    def rcpt_reply(self, address: str) -> str | None:
        """The refusal a special address gets on this try; None to take it."""
        kind = special_kind(address)
        if kind not in (REFUSE, LATER):
            return None
        with self._lock:
            tries = self._tries[address.lower()] = self._tries.get(address.lower(), 0) + 1
        if kind == REFUSE and tries == 1:
            return REFUSED_FOR_GOOD
        if kind == LATER and tries <= LATER_REFUSALS:
            return REFUSED_FOR_NOW
        return None

    def data_delay(self, recipients: Iterable[str]) -> float:
        """Seconds to wait before answering DATA: SLOW_SECONDS when a recipient is a ``slow@`` address."""
        return SLOW_SECONDS if any(special_kind(r) == SLOW for r in recipients) else 0.0
