"""A short chaos run against cluster mode: one kill -9 of each kind under load.

The same run as `make chaos` at a small load (bench/chaos, `Plan.short()`): a
Kafka broker, a gateway, one instance of each service, Redis and a store shard
are killed in turn while clients send and hold WebSockets. The checker's
invariants are asserted; timings are reported, never asserted.
"""

from __future__ import annotations

import pytest

from bench.chaos.__main__ import Plan, render, run
from deploy.local import cluster

pytestmark = [pytest.mark.timeout(1500)]


async def test_nothing_acknowledged_is_lost_doubled_or_reordered_through_every_kill(
    cluster_config: cluster.ClusterConfig,
) -> None:
    report = await run(Plan.short(), cluster_config, say=print)
    print(render(report))
    assert len(report.faults) == len(cluster.SERVICES) + 3, report.faults
    assert all(not f["error"] for f in report.faults), report.faults
    assert report.verdict["acknowledged"] > 0
    assert report.violations == {
        "acknowledged messages lost": 0,
        "duplicates stored": 0,
        "seq gaps": 0,
        "per-conversation order broken": 0,
        "clients not converged through sync": 0,
    }, render(report)
    assert report.ok
