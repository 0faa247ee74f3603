"""The loop metrics (lock-free values) expose exactly what prometheus_client's classes do."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from roomcast.runtime.metrics import (
    FANOUT_LATENCY_BUCKETS,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
    Metrics,
)

Updates = Callable[[Any, Any, Any, Any, Any], None]


def exposition(counter: type, labelled: type, gauge: type, histogram: type, run: Updates) -> str:
    registry = CollectorRegistry()
    run(
        counter("c", "a counter", registry=registry),
        labelled("l", "a labelled counter", ["kind"], registry=registry),
        gauge("g", "a gauge", registry=registry),
        histogram("h", "a histogram", buckets=FANOUT_LATENCY_BUCKETS, registry=registry),
        histogram("hl", "a labelled histogram", ["k"], buckets=(0.1, 1.0), registry=registry),
    )
    # The creation times differ between the two registries; everything else must not.
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


def updates(c: Any, labelled: Any, g: Any, h: Any, hl: Any) -> None:
    c.inc()
    c.inc(41)
    c.inc(0.5)
    labelled.labels("join").inc()
    labelled.labels("message").inc(3)
    labelled.labels("join").inc()
    g.inc()
    g.inc(5)
    g.dec()
    g.set(7)
    g.dec(2)
    for value in (0.0, 0.0001, 0.00010001, 0.003, 0.01, 4.9, 5.0, 5.1, 1e9, math.inf, -1.0):
        h.observe(value)
    hl.labels("a").observe(0.1)
    hl.labels("b").observe(2)


def test_same_exposition_as_prometheus_client() -> None:
    stock = exposition(Counter, Counter, Gauge, Histogram, updates)
    loop = exposition(LoopCounter, LoopCounter, LoopGauge, LoopHistogram, updates)
    assert loop == stock
    assert 'h_bucket{le="0.0001"} 3.0' in loop  # -1, 0 and 0.0001 (a bound is inclusive)
    assert 'h_bucket{le="+Inf"} 11.0' in loop


def test_same_errors_as_prometheus_client() -> None:
    for counter, gauge, histogram in (
        (Counter, Gauge, Histogram),
        (LoopCounter, LoopGauge, LoopHistogram),
    ):
        registry = CollectorRegistry()
        c = counter("c", "c", registry=registry)
        with pytest.raises(ValueError, match="non-negative"):
            c.inc(-1)
        parent = counter("l", "l", ["kind"], registry=registry)
        with pytest.raises(ValueError, match="missing label values"):
            parent.inc()
        g = gauge("g", "g", ["kind"], registry=registry)
        for update in (g.inc, g.dec):
            with pytest.raises(ValueError, match="missing label values"):
                update()
        with pytest.raises(ValueError, match="missing label values"):
            g.set(1)
        h = histogram("h", "h", ["kind"], registry=registry)
        with pytest.raises(ValueError, match="missing label values"):
            h.observe(1.0)
        # NaN falls in no bucket but counts in the sum, as prometheus_client's loop does.
        unlabelled = histogram("n", "n", registry=registry)
        unlabelled.observe(math.nan)
        assert registry.get_sample_value("n_count") == 0
        assert math.isnan(registry.get_sample_value("n_sum") or 0.0)


def test_the_node_metrics_scrape_as_before() -> None:
    """Every metric of the node keeps its samples: names, labels and values after updates."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.connections_open.inc()
    metrics.connections_open.inc()
    metrics.connections_open.dec()
    metrics.connections_accepted.inc()
    metrics.frames_received.labels("join").inc()
    metrics.messages_published.labels("user_joined").inc()
    metrics.deliveries.inc(33)
    metrics.rooms_local.set(4)
    metrics.fanout_latency.observe(0.002)
    metrics.big_room_coalesced.labels("typing").inc()
    metrics.big_room_notices.inc()
    value = registry.get_sample_value
    assert value("roomcast_connections_open") == 1.0
    assert value("roomcast_connections_accepted_total") == 1.0
    assert value("roomcast_connections_accepted_created") is not None
    assert value("roomcast_frames_received_total", {"type": "join"}) == 1.0
    assert value("roomcast_messages_published_total", {"type": "user_joined"}) == 1.0
    assert value("roomcast_deliveries_total") == 33.0
    assert value("roomcast_rooms_local") == 4.0
    assert value("roomcast_fanout_latency_seconds_bucket", {"le": "0.001"}) == 0.0
    assert value("roomcast_fanout_latency_seconds_bucket", {"le": "0.0025"}) == 1.0
    assert value("roomcast_fanout_latency_seconds_count") == 1.0
    assert value("roomcast_fanout_latency_seconds_sum") == 0.002
    assert value("roomcast_big_room_coalesced_total", {"kind": "typing"}) == 1.0
    assert value("roomcast_big_room_notices_total") == 1.0
