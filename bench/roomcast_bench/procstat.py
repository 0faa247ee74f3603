"""CPU time and memory of processes, read from /proc (Linux only).

CPU time is the sum of ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU, every thread), or
``utime + stime`` from ``/proc/PID/stat`` (clock ticks, 10 ms) where schedstat is missing. The
benchmark only uses deltas over a measurement window, so what a process spent before does not
matter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds, all threads, 10 ms resolution; zeros when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0, 0.0
    fields = raw.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _stat_seconds(pid: int) -> float:
    return sum(user_system_seconds(pid))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of every thread of ``pid`` so far; 0.0 when it is gone."""
    try:
        total = 0
        found = False
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as handle:
                    total += int(handle.read().split()[0])
                    found = True
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
        if found and total > 0:
            return total / 1e9
        return _stat_seconds(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0


def runqueue_wait_seconds(pid: int) -> float:
    """Time every thread of ``pid`` spent runnable but waiting for a CPU, so far (schedstat's
    second field); 0.0 when it is gone or the kernel keeps no schedstat. A process that waits
    for a CPU as long as it runs is starved by the machine, not busy with its own work: a
    latency it shows then measures the machine."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as handle:
                    total += int(handle.read().split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return total / 1e9


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (e.g. nginx's workers of its master)."""
    result: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                text = Path(f"{task.path}/children").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            result.extend(int(p) for p in text.split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return result


def with_children(pid: int) -> list[int]:
    return [pid, *children(pid)]


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
    return busy / _CLK_TCK


class CpuWindow:
    """CPU seconds of named groups of processes between ``start()`` and ``stop()``."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: dict[int, float] = {}
        self._split: dict[int, tuple[float, float]] = {}
        self._split_end: dict[int, tuple[float, float]] = {}
        self.seconds: dict[str, float] = {}
        # Per group: seconds its processes were runnable but waited for a CPU in the window.
        self.waited: dict[str, float] = {}
        self._waits: dict[int, float] = {}
        self._machine = 0.0
        self.other = 0.0

    def start(self) -> CpuWindow:
        pids = [pid for pids in self.groups.values() for pid in pids]
        self._split = {pid: user_system_seconds(pid) for pid in pids}
        self._start = {pid: cpu_seconds(pid) for pid in pids}
        self._waits = {pid: runqueue_wait_seconds(pid) for pid in pids}
        self._machine = machine_busy_seconds()
        return self

    def system_share(self) -> dict[str, float | None]:
        """Per group: the kernel's share (stime) of its CPU time in the window."""
        shares: dict[str, float | None] = {}
        for name, pids in self.groups.items():
            user = system = 0.0
            for pid in pids:
                u0, s0 = self._split.get(pid, (0.0, 0.0))
                u1, s1 = self._split_end.get(pid, (u0, s0))
                user += max(0.0, u1 - u0)
                system += max(0.0, s1 - s0)
            shares[name] = system / (user + system) if user + system > 0 else None
        return shares

    def stop(self) -> dict[str, float]:
        self._split_end = {pid: user_system_seconds(pid) for pid in self._start}
        self.seconds = {
            name: sum(max(0.0, cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in pids)
            for name, pids in self.groups.items()
        }
        self.waited = {
            name: sum(
                max(0.0, runqueue_wait_seconds(pid) - self._waits.get(pid, 0.0)) for pid in pids
            )
            for name, pids in self.groups.items()
        }
        # Everything else that ran meanwhile (other users of the machine, the coordinator...):
        # a noisy window shows here.
        self.other = max(0.0, machine_busy_seconds() - self._machine - sum(self.seconds.values()))
        return self.seconds
