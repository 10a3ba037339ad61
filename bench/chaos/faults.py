"""The chaos run's faults: kill -9 each component of the cluster in turn, and what each cost.

Owns the fault schedule and the unavailability figures. A fault is a SIGKILL of
one process (deploy/local/cluster.py `kill`): a Kafka broker, a gateway, one
instance of each service, Redis, a store shard. Service instances come back
through the cluster's supervisor; infrastructure is started again after
`restore_after_s`, as an orchestrator would. The next fault waits until the
previous victim answers again (bounded), so faults do not pile up.

Figures per fault, from the clients' send attempts between its kill and the next
one: failed attempts; the span from the first failed attempt to the end of the
last (how long some sends failed); the longest stretch without a single
acknowledgement (how long sending stopped altogether); the slowest
acknowledgement of a message first tried in the window, retries included.
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from dataclasses import dataclass

from bench.chaos.clients import Attempt, Load, now
from deploy.local import cluster

SERVICE_VICTIMS = (
    "gateway-1",
    "user_service-1",
    "group_service-1",
    "message_service-2",
    "delivery_service-1",
    "persister-2",
    "notifier-1",
)


def default_victims(config: cluster.ClusterConfig) -> list[str]:
    """A broker, a gateway, one instance of each service, Redis, a store shard."""
    store = [c.name for c in cluster.store_components(config) if c.name != "redis"]
    shard = next((n for n in store if "shard" in n), store[0] if store else None)
    victims = ["kafka-2", *SERVICE_VICTIMS, "redis"]
    if shard:
        victims.append(shard)
    return victims


@dataclass
class Fault:
    victim: str
    killed_at: float
    #: When the victim answered again (infrastructure: restarted and ready;
    #: a service instance: its /readyz 200 after the supervisor restarted it).
    back_at: float | None = None
    error: str = ""


def _is_service(victim: str) -> bool:
    service, _, instance = victim.rpartition("-")
    return service in cluster.SERVICES and instance.isdigit()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


async def _wait_back(config: cluster.ClusterConfig, victim: str, timeout_s: float) -> bool:
    service, _, instance = victim.rpartition("-")
    url = config.instance_url(service, int(instance)) + "/readyz"
    deadline = now() + timeout_s
    await asyncio.sleep(1.0)  # the supervisor's first backoff is 0.5 s
    while now() < deadline:
        if await asyncio.to_thread(_ready, url):
            return True
        await asyncio.sleep(0.5)
    return False


async def run_faults(
    config: cluster.ClusterConfig,
    victims: list[str],
    *,
    first_after_s: float,
    interval_s: float,
    restore_after_s: float,
    faults: list[Fault],
    back_timeout_s: float = 180.0,
) -> None:
    """Kill each victim in turn, at least `interval_s` apart; bring infrastructure back.
    Each fault is appended to `faults` as it happens."""
    await asyncio.sleep(first_after_s)
    for victim in victims:
        began = now()
        fault = Fault(victim, began)
        faults.append(fault)
        try:
            await asyncio.to_thread(cluster.kill, victim, config=config)
            fault.killed_at = now()
            if _is_service(victim):
                if await _wait_back(config, victim, back_timeout_s):
                    fault.back_at = now()
            else:
                await asyncio.sleep(restore_after_s)
                await asyncio.to_thread(
                    cluster.up, [victim], config=config, timeout_s=back_timeout_s
                )
                fault.back_at = now()
        except Exception as exc:  # recorded; the run goes on and the report shows it
            fault.error = f"{type(exc).__name__}: {exc}"
        rest = interval_s - (now() - began)
        if rest > 0:
            await asyncio.sleep(rest)


@dataclass
class FaultFigures:
    victim: str
    down_s: float | None
    failed_attempts: int
    failing_span_s: float
    longest_no_ack_s: float
    slowest_ack_s: float
    unacknowledged: int
    error: str


def figures(load: Load, faults: list[Fault], end: float) -> list[FaultFigures]:
    attempts = sorted(load.attempts, key=lambda a: a.ended)
    sent = load.sent()
    result = []
    for i, fault in enumerate(faults):
        stop = faults[i + 1].killed_at if i + 1 < len(faults) else end
        window = [a for a in attempts if fault.killed_at <= a.ended < stop]
        failed = [a for a in window if not a.ok]
        firsts = [m for m in sent if fault.killed_at <= m.first_attempt < stop]
        slowest = max(
            ((m.acked_at - m.first_attempt) for m in firsts if m.acked_at is not None),
            default=0.0,
        )
        result.append(
            FaultFigures(
                victim=fault.victim,
                down_s=None if fault.back_at is None else fault.back_at - fault.killed_at,
                failed_attempts=len(failed),
                failing_span_s=(
                    max(a.ended for a in failed) - min(a.started for a in failed) if failed else 0.0
                ),
                longest_no_ack_s=_longest_gap(window, fault.killed_at, stop),
                slowest_ack_s=slowest,
                unacknowledged=sum(1 for m in firsts if m.acked_at is None and not m.rejected),
                error=fault.error,
            )
        )
    return result


def _longest_gap(window: list[Attempt], start: float, stop: float) -> float:
    """The longest time in [start, stop) with no acknowledged send."""
    marks = [start, *(a.ended for a in window if a.ok), stop]
    return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
