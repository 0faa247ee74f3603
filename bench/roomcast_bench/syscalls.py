"""System calls made by some processes during a window, counted by ``perf stat`` tracepoints.

Counts, unlike CPU times, do not move with the machine's speed: "22.9 system calls per setup
against the baseline's 18.3" is the same figure on a quiet or a busy machine. On loopback each
write also runs the receiver's TCP input, so the count of writes is most of a server's kernel
time. Needs Linux ``perf`` (Debian: linux-perf) and the right to trace the PIDs (root, or
``kernel.perf_event_paranoid`` ≤ 1); without them the window reports why and counts nothing.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from typing import IO

# The total, then the calls a WebSocket server makes per connection or per delivery. Names a
# kernel does not have are dropped before counting (perf refuses the whole list otherwise).
TOTAL = "raw_syscalls:sys_enter"
CALLS = (
    "write", "writev", "sendmsg", "sendto", "read", "readv", "recvfrom", "recvmsg",
    "accept4", "epoll_pwait", "epoll_wait", "epoll_ctl", "io_uring_enter", "getpid",
    "getrandom", "getsockname", "getpeername", "setsockopt", "close", "shutdown", "futex",
    "mmap", "munmap", "brk", "clock_gettime",
)  # fmt: skip


def _available(calls: Iterable[str]) -> list[str]:
    """The tracepoints of ``calls`` that this kernel has, as perf event names."""
    try:
        listed = subprocess.run(
            ["perf", "list", "--raw-dump", "tracepoint"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    known = set(listed)
    return [f"syscalls:sys_enter_{c}" for c in calls if f"syscalls:sys_enter_{c}" in known]


class SyscallWindow:
    """``start()``/``stop()`` around some work; ``stop()`` gives {call: count} or None.

    perf starts with its counters off (``-D -1``) and turns them on through its control FIFO;
    ``start()`` returns once perf acknowledged, so no call of the window is missed however
    short it is (a fixed wait for perf to attach once lost most of a 60-client storm).
    """

    def __init__(self, pids: Iterable[int], timeout: float = 15.0) -> None:
        self.pids = list(pids)
        self.timeout = timeout
        self.problem: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._output: IO[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._control: int | None = None
        self._ack: int | None = None

    def start(self) -> SyscallWindow:
        if shutil.which("perf") is None:
            self.problem = "perf is not installed (Debian: apt install linux-perf)"
            return self
        events = [TOTAL, *_available(CALLS)]
        self._dir = tempfile.TemporaryDirectory(prefix="roomcast-perf-")
        control, ack = (os.path.join(self._dir.name, n) for n in ("control", "ack"))
        os.mkfifo(control)
        os.mkfifo(ack)
        # Open until stop() reads perf's counts from it.
        self._output = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-D", "-1", "--control", f"fifo:{control},{ack}",
             "-e", ",".join(events), "-p", ",".join(str(p) for p in self.pids)],
            stdout=subprocess.DEVNULL, stderr=self._output, text=True,
        )  # fmt: skip
        # Our ends of the FIFOs, opened without blocking so a perf that died cannot hang us.
        self._ack = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        self._control = self._open_writer(control)
        if self._control is None or not self._command(b"enable"):
            self.problem = f"perf stat did not start counting: {self._errors()}"
            self._kill()
        return self

    def stop(self) -> dict[str, int] | None:
        proc, output = self._proc, self._output
        if proc is None or output is None:
            self._cleanup()
            return None
        self._command(b"disable")
        interrupt(proc)  # perf stat prints its counts when interrupted, as after Ctrl-C
        text = self._errors()
        self._cleanup()
        counts = parse_perf_stat(text)
        if TOTAL.split(":")[1] not in counts:
            self.problem = f"perf stat counted nothing: {text.strip()[:300]}"
            return None
        return counts

    def _open_writer(self, path: str) -> int | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: perf has not opened its end yet
                if exc.errno != errno.ENXIO or self._proc is None or self._proc.poll() is not None:
                    return None
            time.sleep(0.01)
        return None

    def _command(self, command: bytes) -> bool:
        """Send a control command and wait for perf's "ack"."""
        if self._control is None or self._ack is None:
            return False
        try:
            os.write(self._control, command + b"\n")
        except OSError:
            return False
        reply = b""
        deadline = time.monotonic() + self.timeout
        # poll, not select: a generator holding thousands of sockets has descriptors > 1024.
        poller = select.poll()
        poller.register(self._ack, select.POLLIN)
        while b"ack" not in reply and time.monotonic() < deadline:
            if poller.poll(200):
                reply += os.read(self._ack, 64)
            elif self._proc is not None and self._proc.poll() is not None:
                return False
        return b"ack" in reply

    def _errors(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def _cleanup(self) -> None:
        for fd in (self._control, self._ack):
            if fd is not None:
                os.close(fd)
        self._control = self._ack = None
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def interrupt(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """SIGINT (Ctrl-C: perf and py-spy write their results then), SIGKILL if it lingers."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def parse_perf_stat(text: str) -> dict[str, int]:
    """{call: count} from ``perf stat -x ,`` output; the total is under ``sys_enter``."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            continue  # comments, "<not counted>", "<not supported>"
        event = fields[2].strip()
        name = event.rsplit(":", 1)[-1].removeprefix("sys_enter_")
        counts[name] = counts.get(name, 0) + int(fields[0])
    return counts


def per_unit(counts: dict[str, int] | None, units: int) -> dict[str, float] | None:
    """Counts per setup or per delivery, biggest first, calls under 0.05 per unit left out."""
    if not counts or units <= 0:
        return None
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    return {k: round(v / units, 2) for k, v in ranked if v / units >= 0.05}
