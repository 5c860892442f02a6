"""A subscriber's retry policy: which failures are transient, how often and how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from django.conf import settings


def _default_max_retries() -> int:
    return int(settings.EVENTBUS_RETRY_MAX_RETRIES)


def _default_base() -> float:
    return float(settings.EVENTBUS_RETRY_BASE_DELAY)


def _default_cap() -> float:
    return float(settings.EVENTBUS_RETRY_MAX_DELAY)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter and a cap (AWS Architecture Blog, "Exponential Backoff And Jitter").

    Only exceptions listed in ``transient`` are retried; anything else is a
    permanent failure. Defaults come from the EVENTBUS_RETRY_* settings.
    """

    transient: tuple[type[BaseException], ...] = ()
    max_retries: int = field(default_factory=_default_max_retries)
    base_delay: float = field(default_factory=_default_base)
    max_delay: float = field(default_factory=_default_cap)

    def ceiling(self, retries_done: int) -> float:
        """The largest delay before retry number ``retries_done + 1``."""
        return min(self.max_delay, self.base_delay * (2**retries_done))

    def delay(self, retries_done: int, rng: random.Random | None = None) -> float:
        """A delay drawn uniformly from [0, ceiling]: full jitter spreads a burst of failures."""
        return (rng or random).uniform(0, self.ceiling(retries_done))

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, self.transient)
