"""Parsing what operators type: ages like ``2h`` or ``3d``, rates like ``5/s``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h``, ``3d``, ``1w``; raises ValueError saying what is expected."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age; write a number and a unit, e.g. 30m, 2h, 3d or 1w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_rate(text: str) -> float:
    """Messages per second from ``5/s``, ``5`` (per second), ``120/m`` or ``600/h``; must be above zero."""
    match = _RATE.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a rate; write e.g. 5/s, 5, 120/m or 600/h")
    per_second = float(match.group(1)) / _UNITS[(match.group(2) or "s").lower()]
    if per_second <= 0:
        raise ValueError(f"rate {text!r} must be above zero")
    return per_second
