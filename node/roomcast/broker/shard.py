"""A Redis server as a node uses it (centrifuge's shard): one command link and one subscriber
link, opened at start-up, never lazily by the first two joins at once (a join storm cannot open
duplicates); and the watchdog that drops links Redis stopped answering on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio.connection import ConnectionPool

from roomcast.broker import MessageHandler
from roomcast.broker.deadline import RedisClock
from roomcast.broker.links import (
    CommandLink,
    Endpoint,
    PubSub,
    RedisLink,
    Refusal,
    SubscriberLink,
)
from roomcast.broker.scripts import Script

log = logging.getLogger("roomcast.broker.redis")


@dataclass(frozen=True, slots=True)
class ShardEvents:
    """What a shard's links tell whoever composes them (the broker, through its topology)."""

    message: MessageHandler  # a publication on a subscribed channel: (room, payload)
    # A room may have missed publications, check it against history: told each time its
    # subscription is confirmed (first time or again), and after an ASK-served publication.
    recheck: Callable[[str], None]
    changed: Callable[[], None]  # a link connected or lost its connection
    commands_up: Callable[[], None]  # the command link connected, its scripts queued first
    lost: Callable[[], None] | None = None  # a link lost its connection (before ``changed``)
    refused: Refusal | None = None  # error replies on the command link (see CommandLink)
    slot_moved: Callable[[], None] | None = None  # see SubscriberLink


@dataclass(eq=False, slots=True)
class RedisShard:
    """One Redis server as this node uses it: one command link and one subscriber link."""

    pool: ConnectionPool
    commands: CommandLink
    subscriber: SubscriberLink

    @classmethod
    def open(
        cls,
        label: str,
        endpoint: Endpoint,
        script_set: tuple[Script, ...],
        pubsub: PubSub,
        events: ShardEvents,
        clock: RedisClock | None = None,
    ) -> RedisShard:
        """Links named ``publisher``/``subscriber`` and ``label`` (the server, in a cluster);
        ``clock``: the estimate of Redis's clock its command link samples (shared by a
        cluster's shards: the publish deadlines are computed before a command is routed)."""
        suffix = f" {label}" if label else ""

        def commands_up() -> None:
            _one_server(commands, subscriber)
            events.commands_up()
            events.changed()

        def subscriber_up() -> None:
            _one_server(subscriber, commands)
            events.changed()

        def down() -> None:
            if events.lost is not None:
                events.lost()
            events.changed()

        commands = CommandLink("publisher" + suffix, endpoint, script_set, events.refused, clock)
        commands.on_up, commands.on_down = commands_up, down
        subscriber = SubscriberLink(
            "subscriber" + suffix,
            endpoint,
            pubsub,
            events.message,
            events.recheck,
            events.slot_moved,
        )
        subscriber.on_up, subscriber.on_down = subscriber_up, down
        # A demoted primary hears of the new primary's publications only through replication,
        # late or never (a full resync skips what was published before its snapshot, a broken
        # link everything): the subscriber link connects again too, and each room's
        # resubscription has the gap filler check history.
        commands.on_demoted = subscriber.abort
        return cls(endpoint.pool, commands, subscriber)

    @property
    def connected(self) -> bool:
        return self.commands.connected and self.subscriber.connected

    @property
    def reconnects(self) -> int:
        return self.commands.reconnects + self.subscriber.reconnects

    def start(self) -> None:
        self.commands.start()
        self.subscriber.start()

    async def stop(self) -> None:
        await self.commands.stop()
        await self.subscriber.stop()
        await self.pool.disconnect()


def _one_server(fresh: RedisLink, other: RedisLink) -> None:
    """``fresh`` just connected through the shard's address to another server than ``other``
    holds (the address moved, say to a replica promoted by hand, while the old primary still
    took writes): scripts run on one server and publish where the node does not listen, every
    message acknowledged and heard by no one. ``other`` connects again, through the address."""
    if fresh.server and other.server and other.connected and fresh.server != other.server:
        log.warning(
            "redis links reached two servers; reconnecting the older one",
            extra={"link": other.name, "server": fresh.server, "was": other.server},
        )
        other.abort()


async def watch(shards: Callable[[], Iterable[RedisShard]], timeout: float) -> None:
    """Detect a silent Redis (no RST, just no replies): ping every link, abort overdue ones.

    A round that wakes more than a whole round late was held up by the node itself (SIGSTOP, a
    paused or migrated VM, a stalled event loop), not by Redis: what Redis answered and
    published meanwhile waits unread in the sockets, and this round runs before the read loops
    had a turn. Judged then, every link looked dead: a subscriber link holding every
    publication of the pause was dropped, and its rooms' members were told ``too_old`` for what
    history no longer held. Such a round only pings; the next one judges (a Redis that really
    went silent meanwhile is caught half a timeout later, never two rounds in a row spared).
    """
    loop = asyncio.get_running_loop()
    interval = timeout / 2
    last = loop.time()
    spared = False
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        slept, last = now - last, now
        if slept > 2 * interval and not spared:
            spared = True
            log.warning(
                "node was stalled; redis links judged next round",
                extra={"stalled_s": round(slept - interval, 3)},
            )
            for shard in shards():
                shard.commands.sample_clock()
                shard.subscriber.ping()
            continue
        spared = False
        for shard in shards():
            shard.commands.watch(now)
            shard.subscriber.watch(now)
