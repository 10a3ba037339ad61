"""Latency and run statistics: percentiles of one run, medians across runs.

Percentiles use the nearest-rank method on the client's own samples
(nanoseconds from time.perf_counter_ns), reported in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (fraction in [0, 1])."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is outside [0, 1]")
    rank = max(1, math.ceil(fraction * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


def median(values: Iterable[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2.0


@dataclass(frozen=True)
class Latency:
    """p50/p95/p99/max in milliseconds over `count` samples."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_ns(cls, samples_ns: Iterable[int]) -> Latency | None:
        ordered = sorted(samples_ns)
        if not ordered:
            return None
        ms = [s / 1e6 for s in ordered]
        return cls(
            count=len(ms),
            p50_ms=percentile(ms, 0.50),
            p95_ms=percentile(ms, 0.95),
            p99_ms=percentile(ms, 0.99),
            max_ms=ms[-1],
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def short(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} / p95 {self.p95_ms:.1f} / "
            f"p99 {self.p99_ms:.1f} / max {self.max_ms:.1f} ms"
        )


def median_latency(runs: Sequence[Latency | None]) -> Latency | None:
    """Each percentile is the median of that percentile over the runs."""
    present = [r for r in runs if r is not None]
    if not present:
        return None
    return Latency(
        count=int(median(r.count for r in present)),
        p50_ms=median(r.p50_ms for r in present),
        p95_ms=median(r.p95_ms for r in present),
        p99_ms=median(r.p99_ms for r in present),
        max_ms=median(r.max_ms for r in present),
    )
