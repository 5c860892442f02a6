"""What the inline SVG charts of ops and telemetry share: the labels along their time axis.

The timeline picture (ops/timeline/picture.py), the overview's throughput
chart (ops/views/overview_tables.py) and the telemetry range chart
(telemetry/chart.py) each lay out their own marks; their templates write each
tick as an SVG ``<text class="tick">``. It lives in project/, which both apps
already import (ops imports telemetry, so a home in ops would make the two
import each other).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """A label on a chart's time axis: ``text`` at ``x`` (SVG user units; the template anchors it)."""

    x: float
    text: str
