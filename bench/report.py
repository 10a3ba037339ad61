"""The results: one row per figure, the printed table and bench/results/latest.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One figure: the median over runs, each run's figure, and how it compares to its target."""

    scenario: str
    name: str
    value: float | None = None
    unit: str = ""
    target: str = ""
    #: True/False against the target; None where there is no target or no figure.
    met: bool | None = None
    runs: list[float] = field(default_factory=list)
    #: "not available: ..." / "failed: ..." replaces the figure when there is none.
    status: str = ""
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def figure(self) -> str:
        if self.value is None:
            return self.status or "no figure"
        if abs(self.value) >= 100:
            text = f"{self.value:,.0f}"
        elif abs(self.value) >= 1:
            text = f"{self.value:.2f}"
        else:
            text = f"{self.value:.3f}"
        return f"{text} {self.unit}".strip()

    def verdict(self) -> str:
        return {True: "met", False: "MISS", None: "-"}[self.met]


def not_available(scenario: str, name: str, reason: str, target: str = "") -> Row:
    return Row(scenario, name, target=target, status=f"not available: {reason}")


def table(rows: list[Row]) -> str:
    headers = ("#", "figure", "median", "target", "verdict", "runs / note")
    lines = []
    for row in rows:
        runs = ", ".join(_short(v) for v in row.runs) if row.runs else ""
        extra = "; ".join(x for x in (f"runs: {runs}" if runs else "", row.note) if x)
        lines.append((row.scenario, row.name, row.figure(), row.target, row.verdict(), extra))
    widths = [
        min(60, max(len(str(x[i])) for x in [headers, *lines])) for i in range(len(headers) - 1)
    ]
    out = []

    def fmt(cols: tuple[str, ...]) -> str:
        cells = [str(c).ljust(w) for c, w in zip(cols[:-1], widths, strict=True)]
        return " | ".join([*cells, str(cols[-1])])

    out.append(fmt(headers))
    out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 20)
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def write_json(rows: list[Row], meta: dict[str, Any], path: Path | None = None) -> Path:
    target = path or RESULTS_DIR / "latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {**meta, "results": [asdict(r) for r in rows]}
    target.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return target


def markdown(document: dict[str, Any]) -> str:
    """The results of a latest.json as a Markdown table (for docs/performance.md)."""
    lines = [
        "| # | figure | median | target | verdict | runs / note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for raw in document["results"]:
        row = Row(**raw)
        runs = ", ".join(_short(v) for v in row.runs) if row.runs else ""
        extra = "; ".join(x for x in (f"runs: {runs}" if runs else "", row.note) if x)
        cells = (row.scenario, row.name.strip(), row.figure(), row.target, row.verdict(), extra)
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR / "latest.json"
    print(markdown(json.loads(source.read_text())))
