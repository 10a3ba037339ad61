"""Sampling profiles of the services under load (py-spy), summarised for the report.

`python -m bench --profile` records each service with `py-spy record --format raw`
(collapsed stacks) during the first run of scenario 3 and prints, per service,
the share of samples spent inside the functions that dominate. py-spy samples
from outside the process (ptrace), so the services run unchanged; it costs the
machine a little CPU, which is why profiling is opt-in and figures for the table
come from runs without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SITE_MARKERS = ("site-packages/", "lib/python3.11/")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pids: dict[str, int], duration_s: float, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    """One py-spy recorder per process; each stops by itself after duration_s."""
    binary = py_spy()
    if binary is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(duration_s))),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out_dir / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def _frame_name(frame: str) -> str:
    """`func (path/to/module.py:12)` -> `func (module path)` without the line number."""
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    for marker in SITE_MARKERS:
        if marker in path:
            path = path.split(marker, 1)[1]
    if "/work/" in path or path.startswith("/"):
        path = "/".join(path.split("/")[-2:])
    return f"{name} ({path})"


def summarize(collapsed: str, top: int = 12) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(frame, inclusive share)]) of py-spy's raw (collapsed-stack) output."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for frame in {_frame_name(f) for f in stack.split(";")}:
            inclusive[frame] += samples
    boring = ("runpy", "asyncio/runners", "__main__", "lifecycle.py", "<module>")
    ranked = [
        (frame, n / total)
        for frame, n in inclusive.most_common()
        if not any(b in frame for b in boring)
    ]
    return total, ranked[:top]


def report(out_dir: Path, top: int = 12) -> str:
    lines = []
    for path in sorted(out_dir.glob("*.txt")):
        total, ranked = summarize(path.read_text(), top)
        lines.append(f"{path.stem}: {total} samples (100 Hz, busy threads only)")
        lines.extend(f"  {share:6.1%}  {frame}" for frame, share in ranked)
    return "\n".join(lines)


async def metric_families(http: Any, metrics_url: str) -> list[Any]:
    """A service's /metrics (at `metrics_url`), parsed (prometheus_client's text parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(metrics_url) as response:
        text = await response.text()
    return list(text_string_to_metric_families(text))


async def batch_stats(http: Any, metrics_urls: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per consumer group, over the whole bench: batches, records per batch, ms per batch.

    Read from each service's /metrics (libs/metrics.py: messenger_batch_seconds and
    messenger_batch_records), so the consumer side of every figure can be seen.
    """
    stats: dict[str, dict[str, float]] = {}
    for name, url in metrics_urls.items():
        try:
            families = await metric_families(http, url)
        except Exception:  # a service that died has no metrics; the table says the rest
            continue
        sums: dict[tuple[str, str], float] = {}
        for family in families:
            if family.name not in ("messenger_batch_seconds", "messenger_batch_records"):
                continue
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    group = sample.labels.get("group", name)
                    sums[(family.name + sample.name[sample.name.rindex("_") :], group)] = (
                        sample.value
                    )
        for (metric, group), _ in sums.items():
            if metric != "messenger_batch_seconds_count":
                continue
            batches = sums[(metric, group)]
            if not batches:
                continue
            records = sums.get(("messenger_batch_records_sum", group), 0.0)
            seconds = sums.get(("messenger_batch_seconds_sum", group), 0.0)
            stats[f"{name}:{group}"] = {
                "batches": batches,
                "records_per_batch": round(records / batches, 1),
                "ms_per_batch": round(seconds / batches * 1000, 2),
            }
    return stats
