"""`make run`'s process supervisor: every Procfile entry runs, and a crashed one comes back.

Owns the lifecycle of the service processes on the local default: it starts
each Procfile entry (`name: command`), prefixes its output with the name, and
when one exits without being asked to, logs it and starts it again after a
backoff (0.5 s doubling to 30 s while it keeps dying within 30 s of starting,
back to 0.5 s after a run that lasted). The others keep serving meanwhile.
SIGINT or SIGTERM stops every process with SIGTERM (their graceful path: stop
consuming, flush, commit, close), then SIGKILL after the grace period.

Why not a library: honcho (used before) stops every process when one exits,
by design; supervisord would add a second configuration beside the Procfile
and a daemon's log format for what is ~150 lines here.

    python -m deploy.local.supervise [--procfile Procfile] [--grace 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
#: A run at least this long resets the backoff.
STABLE_RUN_S = 30.0


def parse_procfile(text: str) -> dict[str, list[str]]:
    """`name: command` lines (blank lines and # comments skipped) -> name -> argv."""
    entries: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"Procfile line {number} is not 'name: command': {raw!r}")
        entries[name.strip()] = shlex.split(command)
    if not entries:
        raise ValueError("the Procfile has no entries")
    return entries


def next_backoff(previous_s: float | None, ran_for_s: float) -> float:
    """The wait before restarting a process that ran `ran_for_s` and whose last wait
    was `previous_s` (None: none yet)."""
    if previous_s is None or ran_for_s >= STABLE_RUN_S:
        return BACKOFF_FIRST_S
    return min(BACKOFF_MAX_S, previous_s * 2)


def log_event(event: str, **fields: object) -> None:
    """One JSON line on stderr, in the services' log shape."""
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "warning" if event != "supervisor started" else "info",
        "service": "supervisor",
        "msg": event,
        **fields,
    }
    sys.stderr.buffer.write(orjson.dumps(line) + b"\n")
    sys.stderr.flush()


@dataclass
class Supervised:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff_s: float | None = None
    restarts: int = 0
    pump: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, entries: dict[str, list[str]], *, grace_s: float) -> None:
        self.services = {name: Supervised(name, argv) for name, argv in entries.items()}
        self.grace_s = grace_s
        self.stopping = asyncio.Event()
        self.width = max(len(name) for name in entries)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        log_event("supervisor started", services=list(self.services))
        watchers = [asyncio.create_task(self._watch(s)) for s in self.services.values()]
        await self.stopping.wait()
        await self._stop_all()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return 0

    async def _start(self, service: Supervised) -> None:
        service.process = await asyncio.create_subprocess_exec(
            *service.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # A session of its own: a Ctrl-C reaches the supervisor only, which then
            # stops each service through its graceful path.
            start_new_session=True,
        )
        service.started_at = time.monotonic()
        service.pump = asyncio.create_task(self._pump(service, service.process))

    async def _pump(self, service: Supervised, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            prefix = f"{time.strftime('%H:%M:%S')} {service.name.ljust(self.width)} | ".encode()
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()

    async def _watch(self, service: Supervised) -> None:
        while not self.stopping.is_set():
            await self._start(service)
            assert service.process is not None
            code = await service.process.wait()
            if service.pump is not None:
                await service.pump
            if self.stopping.is_set():
                return
            ran_for = time.monotonic() - service.started_at
            service.backoff_s = next_backoff(service.backoff_s, ran_for)
            service.restarts += 1
            log_event(
                "service exited; restarting",
                service_name=service.name,
                exit_code=code,
                ran_for_s=round(ran_for, 1),
                restart_in_s=service.backoff_s,
                restarts=service.restarts,
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), service.backoff_s)
            except TimeoutError:
                continue

    async def _stop_all(self) -> None:
        running = [
            s.process
            for s in self.services.values()
            if s.process is not None and s.process.returncode is None
        ]
        for process in running:
            _signal(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p in running)), timeout=self.grace_s
            )
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log_event("service did not stop in time; killing", pid=process.pid)
                    _signal(process, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running))


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.supervise")
    parser.add_argument("--procfile", default="Procfile", type=Path)
    parser.add_argument("--grace", default=20.0, type=float, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    try:
        entries = parse_procfile(args.procfile.read_text())
    except (OSError, ValueError) as exc:
        print(f"supervise: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(Supervisor(entries, grace_s=args.grace).run())


if __name__ == "__main__":
    raise SystemExit(main())
