"""What the suite measures from outside: a process's RSS and CPU time, Redis INFO, node metrics,
a bystander's round trips (the probe subprocess), and the README's documented close codes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.adversarial.devcluster_shim import REPO_ROOT, scaled
from tests.adversarial.reporting_child import ReportingChild

MIB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def redis_command(port: int, *args: str, password: str | None = None) -> Any:
    """One RESP command on its own connection (no client library between us and Redis)."""
    commands = ([("AUTH", password)] if password else []) + [args]
    payload = b"".join(
        f"*{len(c)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in c)
        for c in commands
    )
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(payload)
        stream = sock.makefile("rb")
        replies = [_resp(stream) for _ in commands]
    return replies[-1]


def _resp(stream: Any) -> Any:
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise AssertionError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        return [_resp(stream) for _ in range(int(rest))]
    raise AssertionError(f"unexpected redis reply {line!r}")


def redis_info(port: int, field: str) -> int:
    info: str = redis_command(port, "INFO", "memory")
    match = re.search(rf"^{field}:(\d+)", info, re.MULTILINE)
    assert match is not None, field
    return int(match.group(1))


def metrics_text(metrics_url: str) -> str:
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=scaled(5)) as response:
        text: str = response.read().decode()
    return text


def metric_sum(text: str, name: str) -> float:
    """Every sample of ``name`` (all label sets) added up."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key = line.rsplit(" ", 1)[0]
            if key == name or key.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def published_documentation() -> str:
    """What an operator reads: README.md and every page of the documentation site, with the
    tables the site generates at build time rendered as they are published."""
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    rendered = subprocess.run(
        [sys.executable, "-c", RENDER_PAGES, *map(str, pages)],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    return rendered.stdout


# The site's own renderer (the MkDocs hook), run in a subprocess like every other tool here.
RENDER_PAGES = """
import sys
from pathlib import Path
from roomcast_dev.docsite import render
for page in sys.argv[1:]:
    print(render(Path(page).read_text()))
"""


def documented_close_codes() -> set[int]:
    """Close codes the documentation names (a defended close must use one of them)."""
    return {int(code) for code in re.findall(r"\b(1\d{3}|4\d{3})\b", published_documentation())}


@dataclass
class ProbeResult:
    latencies_ms: list[float]
    failures: list[str]

    def p99(self) -> float:
        assert self.latencies_ms, f"the bystander measured nothing: {self.failures}"
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def describe(self) -> str:
        if not self.latencies_ms:
            return f"no round trips; failures {self.failures[:5]}"
        ordered = sorted(self.latencies_ms)
        return (
            f"{len(ordered)} round trips, p50 {ordered[len(ordered) // 2]:.1f} ms, "
            f"p99 {self.p99():.1f} ms, max {ordered[-1]:.1f} ms, failures {self.failures[:5]}"
        )


class Bystander:
    """The probe subprocess on one node, from ``ready`` until :meth:`finish`."""

    def __init__(self, url: str, room: str) -> None:
        self.child = ReportingChild(
            "tests.adversarial.probe",
            url,
            room,
            what=f"the bystander could not join {room} at {url}",
        )
        self.node: str = self.child.ready["node"]

    def finish(self) -> ProbeResult:
        # Its stdin closed is the probe's signal to stop and report.
        data = self.child.report("", timeout=scaled(30))
        return ProbeResult(data["latencies_ms"], data["failures"])

    def kill(self) -> None:
        self.child.kill()


def kernel_tcp_bytes() -> int:
    """Memory the kernel holds for TCP buffers, machine-wide (/proc/net/sockstat, in pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    raise AssertionError("no TCP line in /proc/net/sockstat")
