"""InternalHttpServer.respond: health, readiness and metrics, without a socket."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from roomcast.net.http_internal import InternalHttpServer
from roomcast.runtime.metrics import Metrics

TEXT = "text/plain; charset=utf-8"


def make(ready: list[bool]) -> tuple[InternalHttpServer, Metrics]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    return InternalHttpServer(registry, lambda: ready[0]), metrics


def test_healthz() -> None:
    server, _ = make([False])
    assert server.respond("/healthz") == (200, TEXT, b"ok\n")


def test_readyz_follows_callable() -> None:
    ready = [True]
    server, _ = make(ready)
    assert server.respond("/readyz") == (200, TEXT, b"ready\n")
    ready[0] = False
    assert server.respond("/readyz") == (503, TEXT, b"not ready\n")
    ready[0] = True
    assert server.respond("/readyz")[0] == 200


def test_metrics_exposes_roomcast_metrics() -> None:
    server, metrics = make([True])
    metrics.frames_rejected.labels("invalid_json").inc(3)
    metrics.connections_open.set(7)
    status, content_type, body = server.respond("/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    text = body.decode()
    for name in (
        "roomcast_connections_open",
        "roomcast_connections_accepted_total",
        "roomcast_handshakes_rejected_total",
        "roomcast_rooms_local",
        "roomcast_frames_received_total",
        "roomcast_frames_rejected_total",
        "roomcast_messages_published_total",
        "roomcast_publish_failures_total",
        "roomcast_deliveries_total",
        "roomcast_fanout_latency_seconds_bucket",
        "roomcast_slow_consumer_drops_total",
        "roomcast_dead_connections_reaped_total",
        "roomcast_redis_connected",
        "roomcast_redis_reconnects_total",
        "roomcast_broker_bad_payloads_total",
        "roomcast_recoveries_total",
        "roomcast_ready",
    ):
        assert name in text, name
    assert 'roomcast_frames_rejected_total{code="invalid_json"} 3.0' in text
    assert "roomcast_connections_open 7.0" in text


def test_metrics_only_from_given_registry() -> None:
    server, _ = make([True])
    body = server.respond("/metrics")[2].decode()
    assert "python_gc" not in body
    assert "process_" not in body


def test_unknown_path_is_404() -> None:
    server, _ = make([True])
    for path in ("/", "/metric", "/healthz/", "/chat", "/readyz?x=1"):
        assert server.respond(path) == (404, TEXT, b"not found\n"), path
