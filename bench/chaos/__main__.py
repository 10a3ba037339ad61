"""`make chaos` / `python -m bench.chaos`: a bounded chaos run against cluster mode.

Brings the cluster up if it is not (and stops it again at the end if it started
it), registers fresh users, opens their WebSockets, offers a steady mixed load
of 1:1 and group messages while killing each component in turn, lets the
clients' retries settle, then runs the checker. Prints the fault table and the
verdict, writes the whole report as JSON (.local/cluster/chaos/<time>.json) and
exits 1 when an invariant is violated (2 when the run itself could not be made).
`--short` is the small run of the test suite (tests/chaos/test_chaos.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.chaos import checker, faults
from bench.chaos.clients import Load, now
from deploy.local import cluster
from libs.settings import ServiceSettings


@dataclasses.dataclass
class Plan:
    rate: float = 300.0
    users: int = 60
    groups: int = 6
    group_size: int = 10
    group_share: float = 0.3
    #: Direct streams per user (to its next `peers` users); each waits for its ack.
    peers: int = 4
    warmup_s: float = 15.0
    #: Least time between two kills; the next also waits until the last victim is back.
    interval_s: float = 20.0
    restore_after_s: float = 5.0
    tail_s: float = 15.0
    settle_s: float = 90.0
    #: The load stops at the latest after this long, faults or not.
    max_load_s: float = 900.0
    #: Clients that also sync from the start (the store's slow path); all sync from
    #: their own position.
    full_syncs: int = 2
    #: Bound of each check's wait (storage catching up, a sync converging).
    check_timeout_s: float = 300.0
    victims: list[str] | None = None

    @classmethod
    def short(cls) -> Plan:
        return cls(
            rate=40.0,
            users=12,
            groups=2,
            group_size=4,
            peers=3,
            warmup_s=5.0,
            interval_s=5.0,
            restore_after_s=3.0,
            tail_s=5.0,
            settle_s=90.0,
            max_load_s=600.0,
        )


@dataclasses.dataclass
class Report:
    plan: dict[str, Any]
    offered: int
    shed: int
    achieved_msg_per_s: float
    load_s: float
    outcomes: dict[str, int]
    faults: list[dict[str, Any]]
    verdict: dict[str, Any]
    violations: dict[str, int]
    ok: bool


async def run(plan: Plan, config: cluster.ClusterConfig, say: Any = print) -> Report:
    victims = plan.victims or faults.default_victims(config)
    settings = ServiceSettings(
        **{
            "MONGO_SHARDS": config.service_env()["MONGO_SHARDS"],
            "MESSENGER_NAMESPACE": config.namespace,
        }
    )
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:
        load = Load(config.url, http)
        say(f"setup: {plan.users} users, {plan.groups} groups of {plan.group_size}")
        await load.setup(plan.users, plan.groups, plan.group_size, plan.peers)
        await load.open_sockets()
        say(
            f"load: {plan.rate:g} msg/s offered ({plan.group_share:.0%} group) over "
            f"{len(load.streams)} streams until {plan.tail_s:g} s after the last fault; "
            f"faults: {', '.join(victims)}"
        )
        started = now()
        done_faults: list[faults.Fault] = []
        fault_task = asyncio.create_task(
            faults.run_faults(
                config,
                victims,
                first_after_s=plan.warmup_s,
                interval_s=plan.interval_s,
                restore_after_s=plan.restore_after_s,
                faults=done_faults,
            )
        )
        faults_done: list[float] = []
        fault_task.add_done_callback(lambda _: faults_done.append(now()))
        duration = await load.run(
            plan.rate,
            lambda: bool(faults_done) and now() >= faults_done[0] + plan.tail_s,
            plan.max_load_s,
            plan.group_share,
            plan.settle_s,
        )
        if not fault_task.done():
            fault_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fault_task
        # Anything a fault left down comes back before the verdict.
        await asyncio.to_thread(cluster.up, config=config)
        sent = load.sent()
        acked_in_time = [
            m for m in sent if m.acked_at is not None and m.acked_at <= started + duration
        ]
        say(
            f"load done after {duration:.0f} s: {len(sent)} sent, {len(acked_in_time)} acknowledged"
        )
        unanswered = await load.final_resume()
        table = faults.figures(load, done_faults, started + duration)

        verdict = checker.Verdict(ws_unanswered_resumes=unanswered)
        acked = [m for m in sent if m.id is not None]
        receivers = [c.account.id for c in load.clients] + list(load.groups)
        say("checking storage")
        stored = await checker.wait_for_storage(
            settings.mongo_shards,
            settings.database_name,
            receivers,
            acked,
            timeout_s=plan.check_timeout_s,
        )
        checker.check_storage(load, stored, verdict)
        say("checking every client's /v1/sync")
        await checker.check_sync(
            load, stored, verdict, timeout_s=plan.check_timeout_s, full_syncs=plan.full_syncs
        )
        await load.stop()

    return Report(
        plan=dataclasses.asdict(plan),
        offered=load.offered,
        shed=load.shed,
        achieved_msg_per_s=len(acked_in_time) / duration,
        load_s=duration,
        outcomes=dict(load.outcomes),
        faults=[dataclasses.asdict(f) for f in table],
        verdict={
            "acknowledged": verdict.acknowledged,
            "unacknowledged": verdict.unacknowledged,
            "rejected": verdict.rejected,
            "stored": verdict.stored,
            "ws_missing_after_final_resume": verdict.ws_missing,
            "ws_unanswered_final_resumes": verdict.ws_unanswered_resumes,
            "reconnects": sum(max(0, c.connects - 1) for c in load.clients),
            "relogins": sum(c.relogins for c in load.clients),
            "examples": verdict.examples(),
        },
        violations=verdict.violations,
        ok=verdict.ok,
    )


def render(report: Report) -> str:
    lines = [
        f"offered {report.offered} msg over {report.load_s:.0f} s "
        f"({report.offered / report.load_s:.0f} msg/s), shed {report.shed}, "
        f"acknowledged during the load {report.achieved_msg_per_s:.0f} msg/s",
        f"attempt outcomes: {report.outcomes}",
        "",
        "| fault (kill -9) | back after s | failed attempts | sends failing s "
        "| longest no-ack s | slowest ack s | unacked |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report.faults:
        down = "-" if f["down_s"] is None else f"{f['down_s']:.1f}"
        lines.append(
            f"| {f['victim']} | {down} | {f['failed_attempts']} | {f['failing_span_s']:.1f} "
            f"| {f['longest_no_ack_s']:.1f} | {f['slowest_ack_s']:.1f} | {f['unacknowledged']} |"
            + (f" error: {f['error']}" if f["error"] else "")
        )
    v = report.verdict
    lines += [
        "",
        f"acknowledged {v['acknowledged']}, unacknowledged {v['unacknowledged']}, "
        f"rejected {v['rejected']}, stored {v['stored']}; reconnects {v['reconnects']}, "
        f"re-logins {v['relogins']}; WebSocket after final resume: "
        f"{v['ws_missing_after_final_resume']} missing",
    ]
    for name, count in report.violations.items():
        lines.append(f"{name}: {count}")
    if v["examples"]:
        lines.append(f"examples: {v['examples']}")
    lines.append("VERDICT: " + ("PASS" if report.ok else "FAIL"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the test suite's small run")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--users", type=int)
    parser.add_argument("--interval", type=float, help="seconds between kills")
    parser.add_argument("--victims", help="comma-separated, e.g. kafka-2,gateway-1,redis")
    parser.add_argument("--out", type=Path, help="the JSON report's path")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = Plan.short() if args.short else Plan()
    if args.rate:
        plan.rate = args.rate
    if args.users:
        plan.users = args.users
    if args.interval:
        plan.interval_s = args.interval
    if args.victims:
        plan.victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    config = cluster.ClusterConfig.from_env()
    started_cluster = not cluster.is_running(config)
    try:
        cluster.up(config=config, report=lambda line: print(line, flush=True))
        report = asyncio.run(run(plan, config, lambda line: print(line, flush=True)))
    except Exception as exc:
        print(f"chaos: the run could not be made: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        if started_cluster:
            cluster.down(config=config)
    out = args.out or config.state_dir / "chaos" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(dataclasses.asdict(report), option=orjson.OPT_INDENT_2))
    print(render(report))
    print(f"report: {out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
