"""Prometheus metrics of one node, named ``roomcast_<subsystem>_<name>_<unit>``.

The registry is passed in, so tests read values from a fresh one. Hot paths never touch a metric
per recipient: deliveries are counted once per flush, latency once per message per node.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

# 100 µs to 5 s: loopback fan-out sits in the first buckets, a stalled node in the last.
FANOUT_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# 1 ms to 10 s: a backend on the same network answers in the first buckets; the last ones are
# beyond any sensible ROOMCAST_HOOK_TIMEOUT and show a timeout set too high.
HOOK_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# 100 µs to 2.5 s: young passes sit in the first buckets; a full pass over a few hundred thousand
# objects (20,000 connections) takes tens of milliseconds, and it stops the whole node meanwhile.
GC_PAUSE_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


# Counters another object keeps (read at scrape time): {label value: count}.
CountReader = Callable[[], Mapping[str, int]]


class _KeptCounters(Collector):
    """One labelled counter whose values another object keeps as plain ints (the broker's gap
    filler counts on its hot path, where a prometheus_client call per event would cost more)."""

    def __init__(self, name: str, documentation: str, label: str, read: CountReader) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in self._read().items():
            family.add_metric([value], count)
        yield family


class _Plain:
    """prometheus_client's value (``MutexValue``) without its lock.

    Every update of the loop metrics below comes from the event loop's thread, and so does a
    scrape (``http_internal``), so the lock bought nothing: with it a counter increment was
    ~1 µs (a Python call, a check, ``with lock``), and a setup makes about ten of them."""

    __slots__ = ("_exemplar", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._exemplar: Exemplar | None = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Exemplar) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Exemplar | None:
        return self._exemplar


# The metrics updated per connection, frame or event (a setup, a close, a delivery), for the
# event loop's thread only. prometheus_client's own classes, so a scrape exposes exactly what
# they would (samples, _created, HELP and TYPE); only the stored value is a _Plain, and the
# updates skip the lock. A labelled parent has no value: updating it raises prometheus_client's
# own error, as before. Not for metrics updated from elsewhere (the GC callbacks' pauses).


class LoopCounter(Counter):
    def _metric_init(self) -> None:
        super()._metric_init()
        self._value: _Plain = _Plain()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if amount < 0 or exemplar:
            super().inc(amount, exemplar)  # its error, or its exemplar
            return
        try:
            self._value._value += amount
        except AttributeError:  # a labelled parent
            super().inc(amount)


class LoopGauge(Gauge):
    def _metric_init(self) -> None:
        super()._metric_init()
        self._value: _Plain = _Plain()

    def inc(self, amount: float = 1) -> None:
        try:
            self._value._value += amount
        except AttributeError:  # a labelled parent
            super().inc(amount)

    def dec(self, amount: float = 1) -> None:
        try:
            self._value._value -= amount
        except AttributeError:
            super().dec(amount)

    def set(self, value: float) -> None:
        try:
            self._value._value = float(value)
        except AttributeError:
            super().set(value)


class LoopHistogram(Histogram):
    def _metric_init(self) -> None:
        super()._metric_init()
        self._sum: _Plain = _Plain()
        self._buckets: list[_Plain] = [_Plain() for _ in self._upper_bounds]

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if exemplar or math.isnan(amount):  # NaN falls in no bucket in prometheus_client's loop
            super().observe(amount, exemplar)
            return
        try:
            self._sum._value += amount
        except AttributeError:  # a labelled parent
            super().observe(amount)
            return
        # The first bound >= amount: the bucket prometheus_client's loop picks.
        self._buckets[bisect_left(self._upper_bounds, amount)]._value += 1


class Metrics:
    def watch_redis_broker(
        self, live_gaps: CountReader, message_fates: CountReader, refusals: CountReader
    ) -> None:
        """Export the Redis broker's own counters (registered once, by the composition root)."""
        self.registry.register(
            _KeptCounters(
                "roomcast_redis_live_gaps",
                "Gap filler events on subscribed rooms: filled (messages handed over from"
                " history), duplicates, losses (loss events sent), given_up (catch-ups out of"
                " patience), stale (live messages of an epoch already announced lost)",
                "event",
                live_gaps,
            )
        )
        self.registry.register(
            _KeptCounters(
                "roomcast_redis_message_fates",
                "Chat messages whose Redis reply was lost, by what the history lookup found:"
                " found (acknowledged late), absent (unavailable), unconfirmed",
                "outcome",
                message_fates,
            )
        )
        self.registry.register(
            _KeptCounters(
                "roomcast_redis_refusals",
                "Commands Redis answered with an error, by its kind (the code it sent, or the"
                " class redis-py made of it); the log keeps about one line a second of each",
                "kind",
                refusals,
            )
        )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.connections_open = LoopGauge(
            "roomcast_connections_open",
            "WebSocket connections open on this node",
            registry=registry,
        )
        self.connections_accepted = LoopCounter(
            "roomcast_connections_accepted", "WebSocket handshakes accepted", registry=registry
        )
        self.connections_max = Gauge(
            "roomcast_connections_max",
            "WebSockets this node holds at most (ROOMCAST_MAX_CONNECTIONS, or its open-files"
            " limit less a reserve)",
            registry=registry,
        )
        self.connections_over_limit = Counter(
            "roomcast_connections_over_limit",
            "Handshakes refused with 503 because the node held roomcast_connections_max",
            registry=registry,
        )
        self.handshakes_rejected = Counter(
            "roomcast_handshakes_rejected",
            "Handshakes refused, by HTTP status (or timeout)",
            ["status"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "roomcast_auth_failures",
            "Handshakes refused by header (400), origin or token checks, by code",
            ["code"],
            registry=registry,
        )
        self.rooms_local = LoopGauge(
            "roomcast_rooms_local",
            "Rooms with at least one member on this node",
            registry=registry,
        )
        self.frames_received = LoopCounter(
            "roomcast_frames_received",
            "Valid client frames, by type",
            ["type"],
            registry=registry,
        )
        self.frames_rejected = Counter(
            "roomcast_frames_rejected",
            "Rejected client input (error frame or close), by code",
            ["code"],
            registry=registry,
        )
        self.messages_published = LoopCounter(
            "roomcast_messages_published",
            "Room events published by this node",
            ["type"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "roomcast_publish_failures",
            "Publications the broker could not take (sender told)",
            registry=registry,
        )
        self.deliveries = LoopCounter(
            "roomcast_deliveries", "Frames written to local client sockets", registry=registry
        )
        self.fanout_latency = LoopHistogram(
            "roomcast_fanout_latency_seconds",
            "From the origin node accepting an event to this node writing it to its sockets",
            buckets=FANOUT_LATENCY_BUCKETS,
            registry=registry,
        )
        self.send_buffered_bytes = Gauge(
            "roomcast_send_buffered_bytes",
            "Bytes this node holds for clients whose socket is backed up (WebSockets, event "
            "streams, HTTP answers), bounded by ROOMCAST_SEND_BUFFER_TOTAL_BYTES",
            registry=registry,
        )
        self.send_budget_squeezes = Counter(
            "roomcast_send_budget_squeezes",
            "Writes to a backed-up client refused (it falls behind, then is dropped if it "
            "still does not read) because the node held more than ROOMCAST_SEND_BUFFER_TOTAL_BYTES",
            registry=registry,
        )
        self.slow_consumer_drops = Counter(
            "roomcast_slow_consumer_drops",
            "Clients closed because they did not read",
            registry=registry,
        )
        self.lags = Counter(
            "roomcast_lags",
            "Members that fell behind by the send bound (lagged), messages replayed to them from "
            "history (replayed), and how lags ended: caught_up, timeout (did not read), gap "
            "(history no longer held what they missed), gave_up (broker unavailable)",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.dead_connections_reaped = Counter(
            "roomcast_dead_connections_reaped",
            "Connections closed for missing pongs",
            registry=registry,
        )
        self.redis_connected = Gauge(
            "roomcast_redis_connected",
            "1 when both Redis links are up (cluster mode)",
            registry=registry,
        )
        self.redis_reconnects = Counter(
            "roomcast_redis_reconnects",
            "Redis link losses followed by reconnect attempts",
            registry=registry,
        )
        self.broker_bad_payloads = Counter(
            "roomcast_broker_bad_payloads",
            "Payloads on room channels no roomcast node wrote",
            registry=registry,
        )
        self.recoveries = Counter(
            "roomcast_recoveries",
            "Joins with 'since', by outcome",
            ["outcome"],
            registry=registry,
        )
        self.api_requests = Counter(
            "roomcast_api_requests",
            "HTTP API requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.big_room_coalesced = LoopCounter(
            "roomcast_big_room_coalesced",
            "Per-member events of big rooms not fanned out (user_joined, user_left: counted "
            "into presence_changed; typing: dropped)",
            ["kind"],
            registry=registry,
        )
        self.big_room_notices = LoopCounter(
            "roomcast_big_room_notices",
            "presence_changed notices sent to a big room's local members (one per room each)",
            registry=registry,
        )
        self.api_orders = Counter(
            "roomcast_api_orders",
            "Server API orders (disconnect, remove, ban) this node carried out from the "
            "control channel",
            ["kind"],
            registry=registry,
        )
        self.event_streams_open = Gauge(
            "roomcast_event_streams_open",
            "Server-Sent Events streams open on this node",
            registry=registry,
        )
        self.hook_calls = Counter(
            "roomcast_hook_calls",
            "Calls of the application's hooks, by hook and result (allow, deny, rewrite, "
            "error, timeout, unreachable, busy, circuit_open)",
            ["hook", "result"],
            registry=registry,
        )
        self.hook_latency = Histogram(
            "roomcast_hook_latency_seconds",
            "Time of a hook call that reached the backend (retries included), by hook",
            ["hook"],
            buckets=HOOK_LATENCY_BUCKETS,
            registry=registry,
        )
        self.hook_circuit_open = Gauge(
            "roomcast_hook_circuit_open",
            "1 while a hook's circuit breaker is open (calls fail at once), by hook",
            ["hook"],
            registry=registry,
        )
        self.gc_pause = Histogram(
            "roomcast_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector (the whole node waits), by generation",
            ["generation"], buckets=GC_PAUSE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.gc_pause_max = Gauge(
            "roomcast_gc_pause_max_seconds",
            "Longest garbage-collector pause since the node started, by generation",
            ["generation"], registry=registry,
        )  # fmt: skip
        self._gc_longest = [0.0, 0.0, 0.0]
        self._gc_children = [
            (self.gc_pause.labels(str(g)), self.gc_pause_max.labels(str(g))) for g in range(3)
        ]
        self.ready = Gauge("roomcast_ready", "1 when the node accepts traffic", registry=registry)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        histogram, longest = self._gc_children[generation]
        histogram.observe(seconds)
        if seconds > self._gc_longest[generation]:
            self._gc_longest[generation] = seconds
            longest.set(seconds)
