"""A real Prometheus server (Debian's `prometheus` package) scraping local roomcast nodes.

The dashboard's screenshot and the test that every dashboard panel has data both read what a
real Prometheus scraped from real nodes, so a renamed metric or a wrong PromQL expression shows
up as an empty panel instead of passing a text comparison.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from roomcast_dev.devcluster import ClusterError, ManagedProcess, find_binary, free_port

JOB = "roomcast-node"


class LocalPrometheus:
    """Prometheus on 127.0.0.1, its targets in a file it watches (so a restarted node's new
    metrics port is followed without a reload)."""

    def __init__(self, workdir: Path, scrape_interval: float = 1.0) -> None:
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.port = 0
        self.process: ManagedProcess | None = None
        self._targets_file = workdir / "targets.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, targets: dict[str, str]) -> None:
        """`targets` maps an instance label (node id) to `host:port` of its metrics."""
        groups = [
            {"targets": [address], "labels": {"instance": instance}}
            for instance, address in sorted(targets.items())
        ]
        # Written whole then renamed: Prometheus must never read a half-written file.
        partial = self._targets_file.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(groups))
        partial.replace(self._targets_file)

    def start(self, targets: dict[str, str]) -> LocalPrometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.set_targets(targets)
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  scrape_timeout: {interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self._targets_file}']\n"
            "        refresh_interval: 1s\n"
        )
        self.port = free_port()
        self.process = ManagedProcess(
            "prometheus",
            [
                find_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
        )
        self._await_ready(30.0)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert self.process is not None
            if not self.process.alive():
                raise ClusterError(f"prometheus exited:\n{self.process.tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"prometheus not ready in time:\n{self.process.tail()}")
            time.sleep(0.1)

    def _api(self, path: str, params: dict[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
            body = orjson.loads(reply.read())
        if body.get("status") != "success":
            raise ClusterError(f"prometheus refused {params}: {body}")
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._api("query", {"query": expr})
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._api(
            "query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return result

    def scraped_instances(self) -> set[str]:
        """Instances whose last scrape succeeded."""
        return {s["metric"]["instance"] for s in self.query(f'up{{job="{JOB}"}} == 1')}
