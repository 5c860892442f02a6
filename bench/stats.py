"""Summaries of repeated measurements: medians, percentiles, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Latency:
    """Per-call latencies of one repetition, in microseconds."""

    calls: int
    median_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, samples_us: Sequence[float]) -> Latency:
        return cls(
            calls=len(samples_us),
            median_us=statistics.median(samples_us),
            p99_us=percentile(samples_us, 0.99),
            mean_us=statistics.fmean(samples_us),
        )


@dataclass(frozen=True)
class Spread:
    """The median of several repetitions, with their smallest and largest value."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("spread of no values")
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
