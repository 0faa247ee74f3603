"""Wiring: settings → broker, node, WebSocket server, internal HTTP server; signals → drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry

from roomcast import __version__
from roomcast.broker import Broker, HistoryLimits
from roomcast.broker.memory import MemoryBroker
from roomcast.core.api_service import ApiService
from roomcast.core.auth import AccessPolicy
from roomcast.core.hooks import Hooks
from roomcast.core.node import Node
from roomcast.core.ratelimit import room_made_cost
from roomcast.core.user_ids import UserIds, key_from_secret
from roomcast.net.admission import Admission
from roomcast.net.hook_client import HookClient
from roomcast.net.http_internal import InternalHttpServer
from roomcast.net.http_public import PublicHttp
from roomcast.net.sendbuffer import new_send_budget
from roomcast.net.transport import CHAT_PATH, Outbox, WebSocketServer
from roomcast.runtime.config import Settings
from roomcast.runtime.gc_tuning import tune_collector, watch_pauses
from roomcast.runtime.metrics import Metrics

if TYPE_CHECKING:
    from roomcast.broker.redis import RedisBroker

log = logging.getLogger("roomcast")
# The broker's clean stop may take this long even when the drain used up its deadline.
MIN_BROKER_STOP_S: Final = 0.5


def user_ids(settings: Settings) -> UserIds:
    """The user_id key all nodes share: its own setting, else derived from the HS256 secret."""
    if settings.user_id_key is not None:
        return UserIds(settings.user_id_key.encode())
    if settings.auth_secret is not None:
        return UserIds(key_from_secret(settings.auth_secret.encode()))
    if settings.auth_public_key is not None:
        log.warning(
            "ROOMCAST_USER_ID_KEY is not set: a user's user_id differs from node to node and "
            "after a restart (set the same random key on every node)"
        )
    return UserIds(os.urandom(32))


class Server:
    """One node process: start, run until told to stop, drain."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.hook_client = HookClient(
            secret=settings.hook_secret, max_response_bytes=settings.hook_max_response_bytes
        )
        self.hooks = Hooks(settings, self.metrics, self.hook_client, settings.node_id)
        self.limits = HistoryLimits(
            settings.history_size, settings.history_ttl, bytes=settings.history_bytes
        )
        self.node = Node(
            settings.node_id,
            settings.max_rooms_per_connection,
            settings.max_frame_bytes,
            self.metrics,
            settings.history_size,
            settings.redis_timeout,
            message_rate=(settings.message_rate_per_second, settings.message_rate_burst),
            typing_rate=(settings.typing_rate_per_second, settings.typing_rate_burst),
            join_rate=(settings.join_rate_per_second, settings.join_rate_burst),
            client_message_rate=(
                settings.client_message_rate_per_second,
                settings.client_message_rate_burst,
            ),
            client_join_rate=(
                settings.client_join_rate_per_second,
                settings.client_join_rate_burst,
            ),
            client_typing_rate=(
                settings.client_typing_rate_per_second,
                settings.client_typing_rate_burst,
            ),
            client_token_check_rate=(
                settings.client_token_check_rate_per_second,
                settings.client_token_check_rate_burst,
            ),
            client_history_rate=(
                settings.client_history_bytes_per_second,
                settings.client_history_bytes_burst,
            ),
            client_history_write_rate=(
                settings.client_history_write_bytes_per_second,
                settings.client_history_write_bytes_burst,
            ),
            history_bytes=settings.history_bytes,
            room_message_rate=(
                settings.room_message_rate_per_second,
                settings.room_message_rate_burst,
            ),
            room_typing_rate=(
                settings.room_typing_rate_per_second,
                settings.room_typing_rate_burst,
            ),
            lag_timeout=settings.lag_timeout,
            # Live events held for a joiner go to it at once after its missed messages (which
            # are paged when larger than the send bound): held within the send bound.
            catch_up_bytes=settings.send_buffer_bytes,
            page_bytes=settings.page_bytes,
            hooks=self.hooks,
            big_room_members=settings.big_room_members,
            max_node_rooms=settings.max_rooms_per_node,
            room_made_bytes=room_made_cost(
                self.limits.ttl, self.limits.meta_ttl, settings.client_history_write_bytes_burst
            ),
            big_room_interval=settings.big_room_interval,
            user_ids=user_ids(settings),
        )
        # This process's identity: prefixes its connection ids and names it in Redis presence,
        # so a restarted node (same node id) is never mistaken for its dead predecessor.
        self.instance = f"{settings.node_id}-{os.urandom(3).hex()}"
        self.started = time.monotonic()
        self.draining = False
        self.stopped = asyncio.Event()
        # Set while the broker is ready: the public port waits for it at start (bounded).
        self._broker_up = asyncio.Event()
        self.port = 0
        self.metrics_port = 0
        self._ws: WebSocketServer | None = None
        self._api: PublicHttp | None = None
        self._http = InternalHttpServer(self.registry, self.is_ready)
        self.broker: Broker = self._make_broker()

    def _make_broker(self) -> Broker:
        broker = self._make_redis_broker() if self.settings.uses_redis else None
        if broker is None:
            return MemoryBroker(
                self.node.on_broker_message,
                self._on_broker_state,
                self.limits,
                on_control=self.node.on_control,
                stats=self.stats,
            )
        self.metrics.watch_redis_broker(
            broker.gaps.counters, broker.fates.counters, broker.refusals
        )
        return broker

    def _make_redis_broker(self) -> RedisBroker:
        settings = self.settings
        common: dict[str, Any] = {
            "timeout": settings.redis_timeout,
            "limits": self.limits,
            "instance": self.instance,
            "presence_ttl": settings.presence_ttl,
            "on_resync": self.node.resync_presence,
            # Applied by the publish script over every node (each node also keeps its own).
            "room_message_rate": (
                settings.room_message_rate_per_second,
                settings.room_message_rate_burst,
            ),
            "on_control": self.node.on_control,
            "stats": self.stats,
        }
        handlers = (self.node.on_broker_message, self._on_broker_state)
        if settings.redis_mode == "cluster":
            from roomcast.broker.redis_cluster import RedisClusterBroker

            return RedisClusterBroker(settings.redis_url or "", *handlers, **common)
        if settings.redis_mode == "sentinel":
            from roomcast.broker.redis_sentinel import RedisSentinelBroker

            return RedisSentinelBroker(
                settings.redis_sentinels,
                settings.redis_sentinel_master or "",
                *handlers,
                url=settings.redis_url,
                sentinel_username=settings.redis_sentinel_username,
                sentinel_password=settings.redis_sentinel_password,
                **common,
            )
        from roomcast.broker.redis import RedisBroker

        return RedisBroker(settings.redis_url or "", *handlers, **common)

    def _broker_name(self) -> str:
        if not self.settings.uses_redis:
            return "memory"
        mode = self.settings.redis_mode
        return "redis" if mode == "standalone" else f"redis-{mode}"

    def stats(self) -> dict[str, Any]:
        """This node as GET /api/cluster lists it (published through the broker)."""
        return {
            "node": self.settings.node_id,
            "instance": self.instance,
            "connections": len(self.node.connections),
            "rooms": self.node.rooms.room_count,
            "ready": self.is_ready(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    def is_ready(self) -> bool:
        return self.broker.serving and not self.draining

    def _on_broker_state(self, ready: bool) -> None:
        if self.settings.uses_redis:
            self.metrics.redis_connected.set(1 if ready else 0)
            if not ready:
                self.metrics.redis_reconnects.inc()
            elif self.node.broker is not None:
                # Redis may have restarted empty: put our members back into presence.
                self.node.resync_presence()
        if ready:
            self._broker_up.set()
        else:
            self._broker_up.clear()
        self.metrics.ready.set(1 if self.is_ready() else 0)
        log.info("broker state", extra={"ready": ready})

    async def _await_broker(self) -> None:
        """Give Redis up to ROOMCAST_REDIS_TIMEOUT before the public port opens: a port opened
        first refuses every join of its first clients with ``unavailable`` (a rolling update's
        new pod, a restarted node behind nginx) while the links are still being set up. A Redis
        that is not there by then does not keep the node shut: it serves, not ready (``/readyz``
        503), and refuses joins with ``unavailable`` until Redis comes."""
        if self.broker.ready:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._broker_up.wait(), self.settings.redis_timeout)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Built once, here, for both sides of the public port.
        policy = AccessPolicy.from_settings(self.settings)
        outbox = Outbox(loop, self.metrics)
        self.node.attach(self.broker, outbox)
        # Setups per second, WebSocket handshakes and event streams together.
        setups = Admission.from_settings(self.settings)
        service = ApiService(
            self.broker,
            self.settings,
            self.metrics,
            policy,
            self.node.presence_pages,
            self.node.history_budget,
            client_messages=self.node.admit_message,
            room_made=self.node.room_made,
            user_ids=self.node.user_ids,
            stream_refusal=self.node.streams.refusal_of,
            stream_churn=self.node,
            stream_setups=setups.admit,
        )
        send_budget = new_send_budget(self.settings, self.metrics)
        self._api = PublicHttp(
            service,
            self.node.streams,
            self.settings,
            self.metrics,
            policy.proxies,
            outbox,
            loop,
            send_budget=send_budget,
        )
        self._ws = WebSocketServer(
            self.node,
            self.settings,
            self.metrics,
            loop,
            self.instance,
            policy=policy,
            outbox=outbox,
            http=self._api,
            hooks=self.hooks,
            send_budget=send_budget,
            admission=setups,
        )
        self._api.start()
        await self.broker.start()
        self.metrics_port = await self._http.start(
            self.settings.internal_host, self.settings.metrics_port
        )
        await self._await_broker()
        self.port = await self._ws.start(self.settings.host, self.settings.port)
        if not self.settings.auth_enabled:
            log.warning(
                "open mode: no ROOMCAST_AUTH_SECRET or ROOMCAST_AUTH_PUBLIC_KEY, so clients "
                "choose their own usernames; for local development only"
            )
        if not self.settings.allowed_origins:
            log.warning("no ROOMCAST_ALLOWED_ORIGINS: WebSocket connections from any web origin")
        log.info(
            "listening",
            extra={
                "host": self.settings.host,
                "port": self.port,
                "path": CHAT_PATH,
                "metrics_port": self.metrics_port,
                "broker": self._broker_name(),
                "compression": self.settings.compression,
                "ready": self.is_ready(),
                "auth": "token" if self.settings.auth_enabled else "open",
            },
        )

    async def drain(self) -> None:
        """SIGTERM: not ready, stop accepting, 1001 to clients, exit by the deadline."""
        if self.draining:
            return
        self.draining = True
        self.metrics.ready.set(0)
        log.info("draining", extra={"deadline_s": self.settings.drain_timeout})
        started = time.monotonic()
        # Side by side: the API's requests and the WebSocket's messages are each waited for at
        # most half the deadline, then answered as given up.
        drains: list[Coroutine[Any, Any, None]] = []
        if self._api is not None:
            drains.append(self._api.drain(self.settings.drain_timeout / 2))
        if self._ws is not None:
            drains.append(self._ws.drain(self.settings.drain_timeout))
        await asyncio.gather(*drains)
        # The broker's clean stop (this node's Redis entries removed) within what is left of the
        # deadline: a Redis that stalled during the drain held it for ROOMCAST_REDIS_TIMEOUT more
        # (exit 7.1 s after SIGTERM with a 2 s drain), past an orchestrator's grace period. Cut
        # short, the other nodes reap this one as they would a node that died.
        left = max(MIN_BROKER_STOP_S, self.settings.drain_timeout - (time.monotonic() - started))
        try:
            await asyncio.wait_for(self.broker.stop(), left)
        except TimeoutError:
            log.warning("redis did not answer the clean stop in time; exiting without it")
        self.hook_client.close()
        await self._http.stop()
        self.stopped.set()


async def serve(settings: Settings) -> None:
    server = Server(settings)
    await server.start()
    # After start-up, so modules, settings and the metrics registry are frozen out of GC passes.
    tune_collector(settings.gc_threshold)
    watch_pauses(server.metrics.observe_gc_pause)
    loop = asyncio.get_running_loop()
    drains: list[asyncio.Task[None]] = []  # a reference, so the drain task cannot be collected

    def on_signal(sig: signal.Signals) -> None:
        if drains:
            # A second signal: the operator does not want to wait for the drain.
            log.warning("second signal during the drain: exiting now", extra={"signal": sig.name})
            os._exit(128 + sig)
        drains.append(loop.create_task(server.drain(), name="drain"))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await server.stopped.wait()
    if drains:
        await drains[0]  # re-raises what the drain failed with, instead of losing it
    log.info("stopped")
