"""The one way a service stops (libs/lifecycle.py): SIGTERM ends it with exit code 0, a
supervised task that ends unasked with exit code 1, and either way its contexts close
in the reverse order of opening. Pure: a service with no resources on a free port."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from libs.lifecycle import SUPERVISOR, Supervisor, _serve, repeating
from libs.service import Service
from libs.settings import ServiceSettings

Trigger = Callable[[web.Application], None]


def run_probe(trigger: Trigger, events: list[str]) -> int:
    """Serve a service of two contexts (the second calls `trigger` once open) until it
    stops; the exit code `serve` would give."""

    async def first(app: web.Application, settings: ServiceSettings) -> AsyncIterator[None]:
        events.append("open first")
        yield
        events.append("close first")

    async def second(app: web.Application, settings: ServiceSettings) -> AsyncIterator[None]:
        events.append("open second")

        async def tick() -> None:
            events.append("tick")

        async with repeating(app, "probe-job", 0.01, tick):
            trigger(app)
            yield
        events.append("close second")

    service = Service(name="probe", settings=ServiceSettings, contexts=(first, second))
    settings = ServiceSettings(http_port=0, metrics_port=None)
    return asyncio.run(asyncio.wait_for(_serve("probe", settings, service.create_app), 30))


def test_sigterm_stops_with_exit_0_closing_in_reverse() -> None:
    events: list[str] = []

    def sigterm_soon(app: web.Application) -> None:
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)

    assert run_probe(sigterm_soon, events) == 0
    opened_and_closed = [e for e in events if e != "tick"]
    assert opened_and_closed == ["open first", "open second", "close second", "close first"]
    # The periodic job ran meanwhile, and its cancellation at shutdown was no failure.
    assert events.count("tick") >= 2


def test_a_supervised_task_that_ends_stops_with_exit_1() -> None:
    events: list[str] = []

    def doomed_task(app: web.Application) -> None:
        async def crash() -> None:
            await asyncio.sleep(0.1)
            raise RuntimeError("lost the broker")

        app[SUPERVISOR].watch(asyncio.create_task(crash()), "doomed")

    assert run_probe(doomed_task, events) == 1
    assert [e for e in events if e.startswith("close")] == ["close second", "close first"]


async def test_a_failing_periodic_job_is_retried_and_its_end_is_no_failure() -> None:
    app = web.Application()
    app[SUPERVISOR] = supervisor = Supervisor()
    calls = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("redis is down")
        if calls == 4:
            recovered.set()

    async with repeating(app, "flaky", 0.01, flaky):
        await asyncio.wait_for(recovered.wait(), 10)
    # Its owner stopped it: the supervisor has nothing to report.
    await asyncio.sleep(0)
    assert supervisor.failure is None
    assert not supervisor.stopped.is_set()
