"""Benchmark outcomes: the JSON under benchmarks/results/, the BENCHMARKS.md sections and the summary table."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT

MARKDOWN = ROOT / "BENCHMARKS.md"
INTRO = """# Benchmarks

Figures produced by `scripts/bench` (all benchmarks) or `scripts/bench NAME ...`. Each section between
`<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` is rewritten by its benchmark; the raw figures are in
`benchmarks/results/NAME.json`. Text outside the markers is kept. Timings depend on the machine named in each
section, which may have been shared with other work.
"""


@dataclass(frozen=True)
class Row:
    """One reported figure; ``ok`` is None when the figure has no target."""

    metric: str
    value: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Outcome:
    """What one benchmark measured. ``passed`` is False when a correctness check (not a speed target) failed."""

    name: str
    how: str
    rows: list[Row]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    passed: bool = True
    machine: dict[str, Any] = field(default_factory=dict)
    date: str = ""


def _mark(ok: bool | None) -> str:
    return "" if ok is None else "yes" if ok else "NO"


def _section(outcome: Outcome) -> str:
    m = outcome.machine
    lines = [
        f"## {outcome.name}",
        "",
        f"Measured {outcome.date} on {m['platform']}, {m['cpu_model']}, {m['cpus_usable']} of {m['cpu_count']} CPUs "
        f"usable, Python {m['python']} (1-minute load average {m['load_average_1m']} at the start).",
        "",
        f"How it was measured: {outcome.how}",
        "",
        "| metric | value | target | met |",
        "| --- | --- | --- | --- |",
        *(f"| {r.metric} | {r.value} | {r.target} | {_mark(r.ok)} |" for r in outcome.rows),
    ]
    if outcome.notes:
        lines += ["", *(f"- {note}" for note in outcome.notes)]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def update_markdown(outcome: Outcome, path: Path = MARKDOWN) -> None:
    """Replace this benchmark's section of BENCHMARKS.md (append it if absent; create the file if needed)."""
    start, end = f"<!-- bench:{outcome.name}:start -->", f"<!-- bench:{outcome.name}:end -->"
    block = f"{start}\n{_section(outcome)}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    head, found, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    _write(path, head + block + tail if found and found_end else text.rstrip("\n") + "\n\n" + block + "\n")


def save(outcome: Outcome) -> Path:
    """Write benchmarks/results/NAME.json and the BENCHMARKS.md section; return the JSON's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{outcome.name}.json"
    _write(path, json.dumps(asdict(outcome), indent=2) + "\n")
    update_markdown(outcome)
    return path


def render_table(outcomes: list[Outcome]) -> str:
    """A plain-text table of every row of every outcome."""
    rows = [("benchmark", "metric", "value", "target", "met")]
    rows += [(o.name, r.metric, r.value, r.target, _mark(r.ok)) for o in outcomes for r in o.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
