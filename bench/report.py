"""Scenario results and the writer of bench/results/<date>.md (+ PNG charts, + raw JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Target:
    text: str
    measured: str
    met: bool | None  # None: could not be measured in this run


@dataclass
class ScenarioResult:
    number: int
    key: str
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    lines.append("")
    return lines


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def write(
    out_dir: Path,
    stamp: str,
    *,
    smoke: bool,
    machine: dict[str, str],
    peers: dict[str, str],
    results: list[ScenarioResult],
    preamble: list[str],
    duration_s: float,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}-smoke" if smoke else stamp
    path = out_dir / f"{name}.md"
    lines = [f"# Benchmark results {stamp}" + (" (smoke run)" if smoke else ""), ""]
    lines += [*preamble, ""]
    lines += [f"Whole suite took {duration_s / 60:.1f} min.", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += [f"| peer {k} | {v} |" for k, v in peers.items()]
    lines.append("")
    targets = [(r, t) for r in results for t in r.targets]
    if targets:
        lines += [
            "## Targets",
            "",
            "| scenario | target | measured | verdict |",
            "|---|---|---|---|",
        ]
        for r, t in targets:
            lines.append(f"| {r.number} | {t.text} | {t.measured} | {_verdict(t.met)} |")
        lines.append("")
    for r in results:
        lines += [f"## {r.number}. {r.title}", ""]
        if r.error:
            lines += [f"**This scenario failed:** `{r.error}`", ""]
        for note in r.notes:
            lines += [note, ""]
        for table in r.tables:
            lines += _table(table)
        for chart in r.charts:
            lines += [f"![{Path(chart).stem}]({chart})", ""]
    findings = out_dir / f"{stamp}-findings.md"
    if not smoke and findings.exists():
        lines += [
            "## Findings and profiles",
            "",
            f"Written by hand after the run, with the profiles: [{findings.name}]"
            f"({findings.name}).",
            "",
        ]
    path.write_text("\n".join(lines).rstrip() + "\n")
    raw = {r.key: {**r.raw, "error": r.error} for r in results}
    (out_dir / f"{name}.raw.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "peers": peers,
                "results": raw,
                "tables": {r.key: [asdict(t) for t in r.tables] for r in results},
            },
            indent=1,
            default=str,
        )
    )
    return path


def line_chart(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list[float], list[float]]],
    *,
    logx: bool = True,
    logy: bool = False,
    reference: tuple[str, float] | None = None,
) -> bool:
    """One PNG; returns False when matplotlib is missing (the table still carries the data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for label, (xs, ys) in series.items():
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    if reference is not None:
        ax.axhline(reference[1], color="grey", linestyle="--", label=reference[0])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
