"""CPU and memory of the system's processes, read from /proc (Linux).

CPU time is utime + stime of /proc/<pid>/stat (fields 14 and 15, in clock ticks,
summed over all threads of the process), so it counts only work done by the
measured processes, whatever else runs on a shared machine. Memory is VmRSS of
/proc/<pid>/status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, proc_root: Path = Path("/proc")) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    raw = (proc_root / str(pid) / "stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int, proc_root: Path = Path("/proc")) -> int:
    """Resident set size (VmRSS) of one process, in bytes."""
    for line in (proc_root / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU-seconds per named process at one instant."""

    seconds: Mapping[str, float]

    @classmethod
    def take(cls, pids: Mapping[str, int], proc_root: Path = Path("/proc")) -> CpuSnapshot:
        return cls({name: cpu_seconds(pid, proc_root) for name, pid in pids.items()})

    def since(self, earlier: CpuSnapshot) -> dict[str, float]:
        """CPU-seconds each process used between `earlier` and this snapshot."""
        return {
            name: self.seconds[name] - earlier.seconds[name]
            for name in self.seconds
            if name in earlier.seconds
        }


def infra_pids(run_dir: Path) -> dict[str, int]:
    """Pids of the local stack (Redis, Kafka, FerretDB shards) from the launcher's pidfiles."""
    pids: dict[str, int] = {}
    for pidfile in sorted(run_dir.glob("*.pid")):
        lines = pidfile.read_text().splitlines()
        if lines and lines[0].strip().isdigit():
            pid = int(lines[0])
            if Path(f"/proc/{pid}").exists():
                pids[pidfile.stem] = pid
    return pids


def machine_busy_cores(proc_root: Path = Path("/proc")) -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat's cpu line."""
    fields = [float(v) for v in (proc_root / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def wait_until_quiet(
    below_cores: float = 0.3, window_s: float = 1.0, max_wait_s: float = 30.0
) -> tuple[float, float]:
    """Wait until the whole machine used less than `below_cores` cores over a window
    (the work a previous step left behind has drained), or `max_wait_s` passed.

    Returns (seconds waited, cores busy in the last window): the caller reports both,
    so a measurement "at idle" that could not find the machine idle says so."""
    import asyncio
    import time

    started = time.monotonic()
    cores = os.cpu_count() or 1
    while True:
        busy0, total0 = machine_busy_cores()
        await asyncio.sleep(window_s)
        busy1, total1 = machine_busy_cores()
        used = cores * (busy1 - busy0) / max(total1 - total0, 1e-9)
        waited = time.monotonic() - started
        if used < below_cores or waited >= max_wait_s:
            return waited, used


def machine() -> dict[str, object]:
    """What this machine is: core count, memory and CPU model."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_total_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_total_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }
