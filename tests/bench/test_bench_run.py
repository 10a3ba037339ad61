"""One tiny end-to-end run of the harness against the running system (no speed assertion).

Seeds users through the API, offers a small REST load from the client
processes and checks that every message was answered 201 and persisted
(the persister's counter, then checked against a count of the shards), then
runs scenario 3/7 at a tiny rate and checks every message reached its online
recipient and CPU was accounted.
"""

from __future__ import annotations

import dataclasses
import time

import aiohttp

from bench import scenarios
from bench.environment import BenchSystem, seed_users
from bench.loadgen import raise_fd_limit
from tests.support.client import Api
from tests.support.system import RunningSystem


def _bench_for(system: RunningSystem) -> BenchSystem:
    from bench.procstat import infra_pids
    from deploy.local.stack import StackConfig

    config = StackConfig.from_env()
    return BenchSystem(
        system=system,
        namespace=system.namespace,
        database=f"messenger_{system.namespace}",
        mongo_uris=tuple(config.endpoints.mongo_shards),
        infra_pids=infra_pids(config.run_dir),
        fd_limit=raise_fd_limit(),
    )


async def test_a_tiny_run_persists_and_delivers_every_message(system: RunningSystem) -> None:
    bench = _bench_for(system)
    plan = dataclasses.replace(
        scenarios.Plan.quick(), runs=1, pairs=4, e2e_rate=10, e2e_duration_s=1.0
    )
    lines: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            api = Api(http, bench.gateway_url)
            ctx = scenarios.Context(
                bench=bench,
                plan=plan,
                http=http,
                api=api,
                deadline=time.monotonic() + 600,
                log=lines.append,
            )
            await bench.baseline_storage()
            ctx.users = await seed_users(api, plan.pairs + 1)
            assert len({u.id for u in ctx.users}) == plan.pairs + 1

            step = await scenarios.send_step(ctx, "rest", 10, 1.0, tag="tinyrest")
            assert step.offered == 10
            assert step.ok == 10, (step.errors, step.first_error)
            assert step.errors == {}
            assert step.shed == 0
            assert step.persisted == 10
            assert step.latency is not None
            assert step.latency.count == 10

            rows = await scenarios.end_to_end(ctx, {"3", "7"})
            # The persister's acknowledged writes are really in the shards.
            counted, expected = await bench.verify_storage()
            assert counted == expected
            assert expected >= bench.documents_at_start + 10
    finally:
        await bench.close()
    by_scenario = {row.scenario: row for row in rows}
    delivery = by_scenario["3"]
    assert delivery.value is not None, delivery
    assert delivery.detail["delivered_fraction"] == [1.0], delivery
    assert "persisted" not in delivery.note, delivery.note
    cost = by_scenario["7"]
    assert cost.value is not None
    assert cost.detail["gross_runs"][0] > 0.0
    assert any("[3/7] 10/s run 1" in line for line in lines)
