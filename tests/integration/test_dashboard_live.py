"""The Grafana dashboard against a real Prometheus scraping real nodes: every panel's PromQL
answers with data once a cluster carries traffic, and the dashboard's picture (docs) is drawn
from those answers. A renamed metric, a wrong label or a broken expression leaves a panel empty
and fails here, where a text comparison of metric names would pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from pathlib import Path

import pytest
from roomcast_dev.dashboard import collect, load_panels, render
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.prometheus import LocalPrometheus

from tests.support.cluster import FAST_ENV, until
from tests.support.delivery import Member, join_member

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus package is needed (make deploy-deps installs it)",
)

SCRAPE = 0.5
RATE_INTERVAL = "4s"  # at least four scrapes, as Grafana's $__rate_interval


async def _talk(members: list[Member], stop: asyncio.Event) -> None:
    serial = 0
    while not stop.is_set():
        for member in members:
            serial += 1
            await member.send_message(f"m{serial}", f"hello {serial}")
            await member.ws.send(json.dumps({"type": "typing", "room": member.room}))
        await member.ws.send("{not json")  # a refused frame, for the rejected-frames panel
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def test_every_panel_has_data_and_the_picture_is_drawn(tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    with LocalCluster(nodes=2, nginx=False, node_env=FAST_ENV, workdir=tmp_path / "cluster") as c:
        prometheus = LocalPrometheus(tmp_path / "prometheus", SCRAPE)
        prometheus.start({n.node_id: f"127.0.0.1:{n.metrics_port}" for n in c.nodes})
        members = [await join_member(n.url, "dash", f"u{i}") for i, n in enumerate(c.nodes * 2)]
        stop = asyncio.Event()
        talker = asyncio.create_task(_talk(members, stop))
        panels = load_panels(rate_interval=RATE_INTERVAL)
        try:

            def empty_panels() -> list[str]:
                return [
                    p.title for p in panels if not any(prometheus.query(t.expr) for t in p.targets)
                ]

            await until(lambda: not empty_panels(), 60, "every dashboard panel to have data")
            # The picture: drawn from Prometheus' ranges for every panel.
            end = time.time()
            series = collect(
                panels,
                lambda expr: prometheus.query_range(expr, end - 10, end, SCRAPE),
            )
            assert all(series[p.title] for p in panels), [t for t, s in series.items() if not s]
            picture = tmp_path / "dashboard.png"
            render(panels, series, picture, "test")
            assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert picture.stat().st_size > 50_000  # sixteen drawn panels, not an empty canvas
        finally:
            stop.set()
            await talker
            for member in members:
                await member.ws.close()
            prometheus.stop()
