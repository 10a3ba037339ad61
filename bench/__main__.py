"""`python -m bench [--quick] [--only 1,3] [--runs N]`: run the scenarios, print the table.

Starts the local stack if needed and the six services in a fresh namespace,
seeds users through the API, runs the selected scenarios in an order that keeps
them independent (baselines first, connection counts before the history
scenario grows the messages collection), prints one table and writes
bench/results/latest.json. The whole full run is planned to stay under 15
minutes on a 2-core machine; a scenario that would not fit in what is left is
reported as such, not squeezed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import traceback
from datetime import UTC, datetime

import aiohttp

from bench import profile, scenarios
from bench.conversations import conversations
from bench.environment import BenchSystem, NotAvailable, git_commit, seed_users
from bench.history import history
from bench.procstat import machine
from bench.report import Row, table, write_json
from tests.support.client import Api
from tests.support.system import ROOT

ALL = ("8", "1", "2", "3", "7", "4", "5", "9", "6")
#: Settings the bench gives the services (recorded in the results).
SERVICE_ENV = {
    # 19,000 idle sockets from ~1,000 seeded users need more than the default 10 per user.
    "GATEWAY_WS_MAX_CONNECTIONS_PER_USER": "64",
    "LOG_LEVEL": "WARNING",
    # One client address seeds ~1,000 accounts: lift the per-address bursts for the bench.
    "GATEWAY_RATE_REGISTER_PER_IP_BURST": "5000",
    "GATEWAY_RATE_LOGIN_PER_IP_BURST": "5000",
    # Load generators send far faster per user than people do.
    "GATEWAY_RATE_SEND_PER_USER_BURST": "1000000",
    "GATEWAY_RATE_GROUP_CHANGES_PER_USER_BURST": "1000000",
    "GATEWAY_RATE_READ_MARKS_PER_USER_BURST": "1000000",
    "GATEWAY_RATE_UPLOADS_PER_USER_BURST": "1000000",
    # Seeding is not what is measured: cheaper argon2id for the seeded accounts (the
    # default, 2 passes over 19 MiB, costs ~50 ms of CPU per register + login here).
    "USER_SERVICE_ARGON2_TIME_COST": "1",
    "USER_SERVICE_ARGON2_MEMORY_KIB": "8192",
}
BUDGET_S = {"full": 14 * 60, "quick": 5 * 60}
#: Rough seconds each scenario needs in a full run, to skip what no longer fits.
COST_S = {"8": 45, "1": 120, "2": 120, "3": 75, "4": 100, "5": 110, "9": 90, "6": 420}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds per scenario")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers (1-9)")
    parser.add_argument("--runs", type=int, default=0, help="runs per scenario (3; quick: 1)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the services with py-spy during scenario 3 (perturbs it)",
    )
    parser.add_argument(
        "--e2e-rate",
        type=int,
        default=0,
        help="scenario 3/7's send rate in msg/s (default: 1,000; quick: 100)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else list(ALL)
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from 1-9")
    args.selected = set(chosen)
    return args


def log(line: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {line}", flush=True)


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    plan = scenarios.Plan.quick() if args.quick else scenarios.Plan.full()
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.e2e_rate:
        plan = dataclasses.replace(plan, e2e_rate=args.e2e_rate)
    if os.environ.get("BENCH_HISTORY_SIZES"):  # e.g. "10000,1000000" (scenario 6)
        sizes = tuple(int(n) for n in os.environ["BENCH_HISTORY_SIZES"].split(","))
        plan = dataclasses.replace(plan, history_sizes=sizes)
    log(
        f"bench ({mode}): scenarios {', '.join(s for s in ALL if s in args.selected)}; "
        "starting the stack and the services"
    )
    bench = await asyncio.to_thread(BenchSystem.start, SERVICE_ENV)
    log(
        f"services up in namespace {bench.namespace} ({time.monotonic() - started:.0f}s); "
        f"logs in {bench.log_dir}"
    )
    rows: list[Row] = []
    batches: dict[str, dict[str, float]] = {}
    storage_check: dict[str, int | bool] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
        ) as http:
            api = Api(http, bench.gateway_url)
            ctx = scenarios.Context(
                bench=bench,
                plan=plan,
                http=http,
                api=api,
                # BENCH_BUDGET_S lifts the budget for a run of one long scenario
                # (scenario 6 seeding 10^6 messages on a busy machine).
                deadline=started + float(os.environ.get("BENCH_BUDGET_S") or BUDGET_S[mode]),
                log=log,
            )
            if args.profile:
                ctx.profile_dir = ROOT / ".local" / "bench-profiles" / bench.namespace
            # Scenario 6 sends to users no one wrote to before: 2 x 20 beyond the ring.
            wanted_users = plan.users if args.selected & {"4", "5"} else plan.pairs + 44
            if args.selected - {"8"}:
                seed_started = time.monotonic()
                try:
                    ctx.users = await seed_users(api, wanted_users)
                    log(f"seeded {len(ctx.users)} users in {time.monotonic() - seed_started:.0f}s")
                except NotAvailable as exc:
                    ctx.seed_error = str(exc)
                    log(f"seeding: {exc}")
            await bench.baseline_storage()
            done: set[str] = set()
            for number in ALL:
                if number not in args.selected or number in done:
                    continue
                if mode == "full" and ctx.remaining_s() < COST_S.get(number, 0) * 0.6:
                    rows.append(
                        Row(
                            number,
                            f"scenario {number}",
                            status="not run: the 15-minute budget is spent",
                        )
                    )
                    continue
                log(f"scenario {number}")
                try:
                    if number == "8":
                        rows += await scenarios.baselines(ctx)
                    elif number in ("1", "2"):
                        rows += await scenarios.throughput(
                            ctx, number, "rest" if number == "1" else "ws"
                        )
                    elif number in ("3", "7"):
                        done |= {"3", "7"}  # one pass measures both, failed or not
                        rows += await scenarios.end_to_end(ctx, args.selected & {"3", "7"})
                    elif number == "4":
                        rows += await scenarios.fanout(ctx)
                    elif number == "5":
                        rows += await scenarios.connections(ctx)
                    elif number == "6":
                        rows += await history(ctx)
                    elif number == "9":
                        rows += await conversations(ctx)
                except Exception as exc:
                    log(f"scenario {number} failed:\n{traceback.format_exc()}")
                    failed = {"3", "7"} & args.selected if number in ("3", "7") else {number}
                    rows += [
                        Row(
                            each,
                            f"scenario {each}",
                            status=f"failed: {type(exc).__name__}: {str(exc)[:150]}",
                        )
                        for each in sorted(failed)
                    ]
            if "8" in args.selected and {"1", "2"} & args.selected:
                rows += scenarios.ratios(ctx)
            log("storage check: counting the shards' documents (the load has stopped)")
            counted, expected = await bench.verify_storage()
            storage_ok = counted == expected
            storage_check = {"counted": counted, "expected": expected, "ok": storage_ok}
            batches = await profile.batch_stats(
                http, {name: proc.metrics_url for name, proc in bench.system.services.items()}
            )
    finally:
        await bench.close()
        await asyncio.to_thread(bench.stop)
    elapsed = time.monotonic() - started
    rows.sort(key=lambda r: int(r.scenario))
    print()
    print(table(rows))
    if batches:
        print("\nconsumer batches over the whole bench (from each service's /metrics):")
        for group, stat in sorted(batches.items()):
            print(
                f"  {group:<48} {stat['batches']:>8,.0f} batches  "
                f"{stat['records_per_batch']:>6} records/batch  {stat['ms_per_batch']:>8} ms/batch"
            )
    if args.profile and ctx.profile_dir is not None and ctx.profile_dir.exists():
        print(f"\nprofiles (py-spy, scenario 3, run 1) in {ctx.profile_dir}:")
        print(profile.report(ctx.profile_dir))
    if storage_check:
        verdict = "ok" if storage_check["ok"] else "MISMATCH"
        print(
            f"\nstorage check: {storage_check['counted']:,} documents in the shards, "
            f"{storage_check['expected']:,} expected (count before the load + the "
            f"persister's acknowledged writes + scenario 6's direct inserts): {verdict}"
        )
    meta = {
        "mode": mode,
        "finished_at": datetime.now(UTC).isoformat(),
        "elapsed_s": round(elapsed, 1),
        "commit": git_commit(),
        "machine": machine(),
        "settings": {
            "plan": dataclasses.asdict(plan),
            "service_env": SERVICE_ENV,
            "kafka_partitions": bench.system.env.get("KAFKA_PARTITIONS"),
            "fd_limit": bench.fd_limit,
            "namespace": bench.namespace,
        },
        "consumer_batches": batches,
        "storage_check": storage_check,
    }
    path = write_json(rows, meta)
    print(f"\n{len(rows)} figures in {elapsed:.0f}s; written to {path}")
    failed = [r for r in rows if r.status.startswith("failed")]
    return 1 if failed or (storage_check and not storage_check["ok"]) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop

        return uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
