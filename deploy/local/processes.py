"""Operating-system plumbing of the local launcher: pidfiles, liveness, ports.

Owns how a background process of the stack is recognised as *ours*: a pidfile
holding the pid, the kernel's start time of that pid (so a recycled pid is never
mistaken for ours) and the ports it was started on. Also owns the port probes
that tell "free", "ours" and "somebody else's" apart. Linux-only (/proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """What a pidfile says about one process the launcher started."""

    pid: int
    start_time: int
    ports: tuple[int, ...]

    def dump(self) -> str:
        return f"{self.pid}\n{self.start_time} {','.join(map(str, self.ports))}\n"

    @classmethod
    def parse(cls, text: str) -> ProcessRecord | None:
        try:
            pid_line, meta_line = text.splitlines()[:2]
            start_time, ports = meta_line.split()
            return cls(int(pid_line), int(start_time), tuple(int(p) for p in ports.split(",")))
        except ValueError:
            return None


@dataclass(frozen=True)
class ProcStat:
    state: str
    pgrp: int
    start_time: int


def proc_stat(pid: int) -> ProcStat | None:
    """The fields of /proc/<pid>/stat the launcher needs; None if there is no such process."""
    # A child of this very process that has exited stays a zombie until reaped.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """True if pid runs (zombies count as dead) and, if given, started at start_time."""
    stat = proc_stat(pid)
    if stat is None or stat.state in ("Z", "X", "x"):
        return False
    return start_time is None or stat.start_time == start_time


def read_record(pidfile: Path) -> ProcessRecord | None:
    """The record of a live process of ours, or None (a stale pidfile is removed)."""
    try:
        record = ProcessRecord.parse(pidfile.read_text())
    except OSError:
        return None
    if record is None or not is_alive(record.pid, record.start_time):
        pidfile.unlink(missing_ok=True)
        return None
    return record


def write_record(pidfile: Path, pid: int, ports: tuple[int, ...]) -> ProcessRecord:
    stat = proc_stat(pid)
    record = ProcessRecord(pid, stat.start_time if stat else 0, ports)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(record.dump())
    tmp.replace(pidfile)
    return record


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group the launcher gave pid (its own session), else pid alone."""
    stat = proc_stat(pid)
    try:
        if stat is not None and stat.pgrp == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (or holds it bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR so that sockets lingering in TIME_WAIT do not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def describe_port_holder(port: int) -> str:
    """'pid 123: redis-server 127.0.0.1:6379' for the listener on port, or '' if unknown."""
    inodes = _listening_inodes(port)
    if not inodes:
        return ""
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    raw = (proc / "cmdline").read_bytes()
                    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                    if len(cmdline) > 80:
                        cmdline = cmdline[:77] + "..."
                    return f"pid {proc.name}: {cmdline}"
            except OSError:
                continue
    return ""


def last_line(path: Path, limit: int = 200) -> str:
    """The last non-blank line of a log file, shortened to limit characters."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16384))
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line and not line.startswith("=== "):
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
