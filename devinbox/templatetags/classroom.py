"""``{% classroom_state as state %}``: what the failure panel shows (ops/templates/ops/_failures.html)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from django import template

from devinbox import faults, flood, queuepause
from eventbus.ops_api import high_water_mark
from project import queues

register = template.Library()


@dataclass(frozen=True)
class PanelState:
    provider_down_for: float = 0.0
    """Seconds the provider's outage has left; 0: none."""
    paused: dict[str, float] = field(default_factory=dict)
    """Each paused queue and the seconds its pause has left."""
    unavailable: str = ""
    """Why the state could not be read (Redis down), else empty."""
    special_addresses: tuple[faults.SpecialAddress, ...] = faults.SPECIAL_ADDRESSES
    pausable: tuple[str, ...] = queuepause.PAUSABLE
    max_seconds: int = faults.MAX_SECONDS
    flood_default: int = 0
    flood_max: int = flood.FLOOD_MAX
    analytics_mark: int = 0


@register.simple_tag
def classroom_state() -> PanelState:
    marks = {"flood_default": flood.default_count(), "analytics_mark": high_water_mark(queues.ANALYTICS)}
    try:
        return PanelState(provider_down_for=faults.provider_down_for(), paused=queuepause.paused(), **marks)
    except redis.RedisError as exc:
        return PanelState(unavailable=f"unavailable: {exc}", **marks)


@register.simple_tag
def special_addresses() -> tuple[faults.SpecialAddress, ...]:
    """The dev SMTP sink's special addresses, for the sign-up page's help."""
    return faults.SPECIAL_ADDRESSES
