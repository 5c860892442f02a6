"""The chart of a run: every figure's candidate against its baseline, throughput on the left, latency on the right.

Each bar pair is one table row of docs/benchmarks.md: the candidate (dark) and
the baseline measured beside it (light), medians over repetitions, with the
ratio and the target written beside them. Rows measured in other units
(memory) are left to the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE_UNITS = ("/s",)
TIME_UNITS = {"ms": 1.0, "µs": 0.001}


@dataclass(frozen=True)
class Bar:
    label: str
    candidate: float
    baseline: float
    unit: str
    ratio: float
    target: str


def _target(op: str | None, bound: float | None) -> str:
    if op is None or bound is None:
        return ""
    return f", target {'≤' if op == '<=' else '≥'} {bound:g}x"


def bars(figures: dict[str, dict[str, Any]]) -> tuple[list[Bar], list[Bar]]:
    """The rows of ``figures`` as (throughput bars, latency bars in ms)."""
    from bench.report import TARGETS

    rates: list[Bar] = []
    latencies: list[Bar] = []
    for key, figure in figures.items():
        number = key.split("_")[0]
        if figure["kind"] == "rows":
            for row in figure["rows"]:
                unit = row["unit"]
                target = row["target"] or {}
                bar = Bar(
                    f"{number} {figure['title']}, {row['label']}",
                    row["candidate"]["value"]["median"],
                    row["baseline"]["value"]["median"],
                    unit,
                    row["ratio"]["median"],
                    _target(target.get("op"), target.get("bound")),
                )
                if unit.endswith(RATE_UNITS):
                    rates.append(bar)
                elif unit in TIME_UNITS:
                    scale = TIME_UNITS[unit]
                    scaled = (bar.candidate * scale, bar.baseline * scale)
                    latencies.append(Bar(bar.label, *scaled, "ms", bar.ratio, bar.target))
        elif figure["kind"] == "throughput":
            op, bound = TARGETS.get(key) or TARGETS.get(number, (None, None))
            rates.append(
                Bar(
                    f"{number} {figure['title']}",
                    figure["candidate"]["per_second"]["median"],
                    figure["baseline"]["per_second"]["median"],
                    "deliveries/s",
                    figure["ratio"]["median"],
                    _target(op, bound),
                )
            )
        elif figure["kind"] == "latency":
            op, bound = TARGETS.get(key) or TARGETS.get(number, (None, None))
            latencies.append(
                Bar(
                    f"{number} {figure['title']}, median",
                    figure["candidate"]["median_us"]["median"] / 1000,
                    figure["baseline"]["median_us"]["median"] / 1000,
                    "ms",
                    figure["ratio_median"]["median"],
                    _target(op, bound),
                )
            )
    return rates, latencies


def draw(figures: dict[str, dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    rates, latencies = bars(figures)
    panels = [(rates, "per second (log scale)", True), (latencies, "milliseconds (log scale)", True)]
    panels = [panel for panel in panels if panel[0]]
    from matplotlib.ticker import FuncFormatter, NullFormatter

    heights = [0.55 * len(panel[0]) + 1.0 for panel in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights) + 0.8), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, (items, xlabel, log) in zip(axes[:, 0], panels, strict=True):
        positions = range(len(items))
        for offset, side, color in ((0.2, "candidate", "#1f4e79"), (-0.2, "baseline", "#9dc3e6")):
            values = [getattr(b, side) for b in items]
            ax.barh([p + offset for p in positions], values, height=0.4, color=color, label=side)
        ax.set_yticks(list(positions))
        ax.set_yticklabels([_wrap(b.label) for b in items], fontsize=8)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.10g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        top = max(max(b.candidate, b.baseline) for b in items)
        bottom = min(min(b.candidate, b.baseline) for b in items)
        ax.set_xlim(left=bottom / 3 if log else 0, right=top * (12 if log else 1.6))
        for p, b in zip(positions, items, strict=True):
            ax.text(
                max(b.candidate, b.baseline) * (1.15 if log else 1.02),
                p,
                f"{b.candidate:,.1f} vs {b.baseline:,.1f} {b.unit}\n{b.ratio:.2f}x{b.target}",
                va="center",
                fontsize=7,
            )
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Each figure against its baseline, same run ({title})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(text: str, width: int = 48) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
