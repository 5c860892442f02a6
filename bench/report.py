"""The results of a run: summaries per figure, a JSON file and a markdown table."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stats import Latency, Spread

if TYPE_CHECKING:  # importing it needs Django set up
    from bench.throughput import Run

# Targets of the figures that predate report.row(), by figure key, else by figure
# number: figure Pa (issue #2) at most 1.5x the naive median; figure 1 at least
# half of bare Celery's rate on SQLite (issue #5) and 0.45x on PostgreSQL, whose
# runs spread from 0.46x to 0.62x (issue #24). The newer figures carry their own.
TARGETS: dict[str, tuple[str, float]] = {"Pa": ("<=", 1.5), "1": (">=", 0.5), "1_pipeline_postgres": (">=", 0.45)}


def latency_figure(title: str, candidate: str, baseline: str, reps: list[dict[str, Latency]]) -> dict[str, Any]:
    def side(role: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "median_us": Spread.of([r[role].median_us for r in reps]).to_dict(),
            "p99_us": Spread.of([r[role].p99_us for r in reps]).to_dict(),
        }

    return {
        "title": title,
        "kind": "latency",
        "candidate": side("candidate", candidate),
        "baseline": side("baseline", baseline),
        # Per repetition, candidate over the baseline measured beside it; then the median.
        "ratio_median": Spread.of([r["candidate"].median_us / r["baseline"].median_us for r in reps]).to_dict(),
        "ratio_p99": Spread.of([r["candidate"].p99_us / r["baseline"].p99_us for r in reps]).to_dict(),
        "repetitions": [{role: asdict(latency) for role, latency in r.items()} for r in reps],
    }


def throughput_figure(title: str, reps: list[dict[str, Run]]) -> dict[str, Any]:
    def side(role: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "per_second": Spread.of([r[role].per_second for r in reps]).to_dict(),
            "seconds": Spread.of([r[role].seconds for r in reps]).to_dict(),
            "send_seconds": Spread.of([r[role].send_seconds for r in reps]).to_dict(),
        }

    return {
        "title": title,
        "kind": "throughput",
        "candidate": side("candidate", "event pipeline (relay -> 2 subscribers)"),
        "baseline": side("baseline", "bare Celery no-op"),
        "ratio": Spread.of([r["candidate"].per_second / r["baseline"].per_second for r in reps]).to_dict(),
        "repetitions": [{role: {**asdict(run), "per_second": run.per_second} for role, run in r.items()} for r in reps],
    }


def row(
    label: str,
    *,
    unit: str,
    candidate: tuple[str, list[float]],
    baseline: tuple[str, list[float]],
    ratios: list[float] | None = None,
    target: tuple[str, float] | None = None,
    digits: int = 0,
) -> dict[str, Any]:
    """One table row of a figure: ``(name, per-repetition values)`` for each side.

    ``ratios`` are the per-repetition candidate/baseline ratios (each side
    against the baseline measured beside it); ``None`` computes them from the
    values, in order. ``target`` is ``("<=" or ">=", bound)`` on the median
    ratio, or ``None`` for a row that gives context and has no target.
    """
    if ratios is None:
        ratios = [c / b for c, b in zip(candidate[1], baseline[1], strict=True)]
    return {
        "label": label,
        "unit": unit,
        "digits": digits,
        "candidate": {"name": candidate[0], "value": Spread.of(candidate[1]).to_dict()},
        "baseline": {"name": baseline[0], "value": Spread.of(baseline[1]).to_dict()},
        "ratio": Spread.of(ratios).to_dict(),
        "target": {"op": target[0], "bound": target[1]} if target else None,
    }


def rows_figure(
    title: str, rows: list[dict[str, Any]], repetitions: list[Any], notes: list[str] | None = None
) -> dict[str, Any]:
    """A figure made of ``row()`` rows; ``repetitions`` keeps every raw measurement for the JSON file."""
    return {"title": title, "kind": "rows", "rows": rows, "repetitions": repetitions, "notes": notes or []}


def _row_verdict(target: dict[str, Any] | None, ratio: float) -> tuple[str, str]:
    if target is None:
        return "none", "-"
    op, bound = target["op"], target["bound"]
    met = ratio <= bound if op == "<=" else ratio >= bound
    return f"{'≤' if op == '<=' else '≥'} {bound:g}x", "yes" if met else "**no**"


def _verdict(key: str, ratio: float) -> tuple[str, str]:
    target = TARGETS.get(key) or TARGETS.get(key.split("_")[0])
    if target is None:
        return "none", "-"
    op, bound = target
    met = ratio <= bound if op == "<=" else ratio >= bound
    return f"{'≤' if op == '<=' else '≥'} {bound:g}x", "yes" if met else "**no**"


def _ratio(spread: dict[str, Any]) -> str:
    return f"{spread['median']:.2f}x ({spread['low']:.2f}-{spread['high']:.2f})"


def markdown_table(figures: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| figure | candidate | baseline | ratio, median (range) over repetitions | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, figure in figures.items():
        label = f"{key.split('_')[0]} {figure['title']}"
        if figure["kind"] == "rows":
            for r in figure["rows"]:
                target, met = _row_verdict(r["target"], r["ratio"]["median"])
                c_value = f"{r['candidate']['value']['median']:,.{r['digits']}f} {r['unit']}"
                b_value = f"{r['baseline']['value']['median']:,.{r['digits']}f} {r['unit']}"
                lines.append(
                    f"| {label}, {r['label']} | {c_value} | {b_value} | {_ratio(r['ratio'])} | {target} | {met} |"
                )
            continue
        c, b = figure["candidate"], figure["baseline"]
        if figure["kind"] == "latency":
            target, met = _verdict(key, figure["ratio_median"]["median"])
            lines.append(
                f"| {label}, median per call | {c['median_us']['median']:,.0f} µs | "
                f"{b['median_us']['median']:,.0f} µs | {_ratio(figure['ratio_median'])} | {target} | {met} |"
            )
            lines.append(
                f"| {label}, p99 per call | {c['p99_us']['median']:,.0f} µs | "
                f"{b['p99_us']['median']:,.0f} µs | {_ratio(figure['ratio_p99'])} | none | - |"
            )
        else:
            target, met = _verdict(key, figure["ratio"]["median"])
            lines.append(
                f"| {label} | {c['per_second']['median']:,.0f} deliveries/s | "
                f"{b['per_second']['median']:,.0f} deliveries/s | {_ratio(figure['ratio'])} | {target} | {met} |"
            )
    lines += ["", "Candidate and baseline of each row:", ""]
    for key, figure in figures.items():
        if figure["kind"] == "rows":
            for r in figure["rows"]:
                lines.append(f"- {key}, {r['label']}: {r['candidate']['name']} vs {r['baseline']['name']}")
            lines += [f"  ({note})" for note in figure["notes"]]
            continue
        lines.append(f"- {key}: {figure['candidate']['name']} vs {figure['baseline']['name']}")
        if figure["kind"] == "throughput":
            c, b = figure["candidate"], figure["baseline"]
            lines.append(
                f"  (median seconds for all deliveries: {c['seconds']['median']:.1f} vs {b['seconds']['median']:.1f}, "
                f"of which the sender took {c['send_seconds']['median']:.1f} vs {b['send_seconds']['median']:.1f})"
            )
    return "\n".join(lines) + "\n"


def machine_lines(machine: dict[str, str], source: dict[str, Any], started_at: str, command: str) -> str:
    changed = source["changed_files"]
    postgres = f", PostgreSQL {machine['postgres']}" if machine.get("postgres") else ""
    code = f"commit {source['commit'][:12]}" + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")
    return (
        f"- command: `{command}`\n"
        f"- date: {started_at}\n"
        f"- code: {code}\n"
        f"- machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} RAM, {machine['os']}\n"
        f"- versions: Python {machine['python']}, Django {machine['django']}, Celery {machine['celery']} "
        f"(kombu {machine['kombu']}, redis-py {machine['redis_py']}), Redis server {machine['redis_server']}, "
        f"SQLite {machine['sqlite']}{postgres}\n"
    )


def write(directory: Path, stem: str, results: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    tmp = directory / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, json_path)
    md_path = directory / f"{stem}.md"
    md_path.write_text(markdown)
    return json_path, md_path


DOC_START = "<!-- bench:results:start -->"
DOC_END = "<!-- bench:results:end -->"


def update_doc(doc: Path, markdown: str) -> None:
    """Replace what lies between the result markers of ``doc`` with ``markdown``."""
    text = doc.read_text()
    if DOC_START not in text or DOC_END not in text:
        raise RuntimeError(f"{doc} lacks the markers {DOC_START} and {DOC_END}")
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(f"{head}{DOC_START}\n{markdown}{DOC_END}{tail}")
