"""What one client has not read yet, bounded: the same rule for WebSockets, event streams and
HTTP answers.

A client that does not read makes its bytes wait in three places: the kernel's socket buffer
(bounded by ``net.ipv4.tcp_wmem``), the transport's write buffer, and what the node holds back
while the transport is paused. The last two are node memory; their sum is the client's
*outstanding* bytes, and it may not exceed the send-buffer limit (``ROOMCAST_SEND_BUFFER_BYTES``).

Bytes go to the transport only while it is not paused (above its high-water mark it calls
``pause_writing``); afterwards they wait here, and are handed over in pieces as the socket drains
(``resume_writing``). So a burst only counts against a client for what the kernel could not take
at once: a client that reads keeps up, one that does not is cut off at the limit.

Over every client of the node, what the node holds for clients whose socket is backed up is
bounded too (:class:`SendBudget`, ``ROOMCAST_SEND_BUFFER_TOTAL_BYTES``): many clients that do not
read, each within its own limit (a hundred addresses, four connections each), would otherwise
grow the node by the limit times their number. Over the total, the clients backed up longest are
dropped, the biggest first (not whoever writes next: that let sockets that never read keep the
total full while readers that read paid); if that is not enough, a client whose socket is backed
up is over its limit at once: it falls behind (no more room traffic) and, if it still does not
read, is dropped, instead of the node growing towards its memory limit. The shedding goes by
client address (an IPv6 client's /64), not only by socket: the address that holds the most goes
first, and an address whose socket went away backed up (closed by its client, or shed) counts
its next ones as backed up since that one was (:data:`CHURN_MEMORY_SECONDS`), so a client cannot
keep the total full with silent sockets it replaces before they are old enough to be shed.

The kernel's share is capped per socket (:func:`cap_kernel_send_buffer`): left to autotuning it
grows to ``net.ipv4.tcp_wmem``'s maximum (4 MiB) per socket, outside any bound of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from roomcast.runtime.config import Settings
    from roomcast.runtime.metrics import Metrics

log = logging.getLogger("roomcast.sendbuffer")

# Over the node's total, a client whose socket has been backed up at least this long may be
# shed (its connection dropped) to bring the node back within it. A reader that reads drains
# its socket within a round trip or two; a burst backs up every member of a room for a moment,
# and those are squeezed (they lag and are caught up from history) rather than dropped.
SHED_AFTER_SECONDS = 1.0

# A client address whose connection went away while backed up (closed by the client with bytes
# it never read, or shed) is remembered this long after: its connections that back up meanwhile
# count as backed up since that connection was. Without it, silent sockets replaced before they
# were SHED_AFTER_SECONDS old kept the total full, never due, while a reader backed up for a
# second or two (a phone out of coverage) became the only one due and was dropped. To start
# afresh an address must let its sockets drain (read them) or pause this long.
CHURN_MEMORY_SECONDS = 30.0


class SocketLike(Protocol):
    """A socket object (uvloop hands out its own kind)."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def cap_kernel_send_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    """Fix the socket's kernel send buffer at ``size`` bytes (the kernel doubles it for its
    bookkeeping), instead of letting autotuning grow it to ``net.ipv4.tcp_wmem``'s maximum
    (4 MiB by default) for a client that does not read: 400 silent WebSockets pinned 1.3 GB of
    kernel memory that way, beyond every bound of the node. What does not fit waits in the
    node, where the client's bound and the node's total (:class:`SendBudget`) hold it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        cap_socket_send_buffer(sock, size)


def cap_socket_send_buffer(sock: SocketLike, size: int) -> None:
    """:func:`cap_kernel_send_buffer` of a socket object. Set on a listening socket, it holds
    for every socket accepted from it: Linux copies the size, locked against autotuning, into
    each (uvloop's socket object for an accepted connection costs a getsockname() for itself
    and another for its setsockopt(): with the setsockopt, 3 of a setup's ~28 system calls)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def new_send_budget(settings: Settings, metrics: Metrics) -> SendBudget:
    """The node's one budget, exported: its bytes as a gauge, its squeezes as a counter."""
    budget = SendBudget(
        settings.send_buffer_total_bytes,
        settings.page_bytes,
        metrics.send_budget_squeezes.inc,
        metrics.slow_consumer_drops.inc,
    )
    metrics.send_buffered_bytes.set_function(lambda: budget.held)
    return budget


class SendBudget:
    """The bytes the node holds, over all its clients, for clients whose socket is backed up
    (each :class:`SendBuffer` reports its own while its transport is paused or it holds
    bytes back). Over ``limit`` the node first sheds the clients that have been backed up
    longest (:data:`SHED_AFTER_SECONDS` and more), those of the address that holds the most first
    (then the biggest of them), until it is within ``limit`` again: their connections are
    dropped. An address whose connection went away backed up counts its others as backed up
    since that one was, for :data:`CHURN_MEMORY_SECONDS`. Only if that is not enough is a
    backed-up client over its own limit at once (it lags). ``on_squeeze`` counts the writes
    that found the node over it, ``on_shed`` the connections dropped for it.

    Without the shedding, whoever wrote next paid: sockets that never read could fill the total
    within their own bounds and stay, while a reader backed up for one burst lagged (and read 2
    of the burst's 20 messages)."""

    __slots__ = (
        "_backed_up",
        "_clock",
        "_expiring",
        "_holders",
        "_no_shed_before",
        "held",
        "limit",
        "on_shed",
        "on_squeeze",
        "page",
    )

    def __init__(
        self,
        limit: int,
        page: int,
        on_squeeze: Callable[[], None] | None = None,
        on_shed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._clock = clock
        # The most one write may queue for a client that is not backed up while over the total.
        self.page = page
        self.held = 0
        self.on_squeeze = on_squeeze
        self.on_shed = on_shed
        # The buffers counted in ``held`` now.
        self._backed_up: set[SendBuffer] = set()
        # No buffer has been backed up for SHED_AFTER_SECONDS before this (time.monotonic()).
        self._no_shed_before = 0.0
        # Per owner (client address): what its backed-up buffers hold, and whether one of its
        # connections went away backed up lately. Only owners with a buffer counted now or
        # remembered for CHURN_MEMORY_SECONDS are here.
        self._holders: dict[str, Holder] = {}
        # Owners remembered, in the order they expire (each is moved to the end when renewed).
        self._expiring: OrderedDict[str, float] = OrderedDict()

    @property
    def exhausted(self) -> bool:
        """Over the limit even after shedding the clients backed up longest."""
        if self.held > self.limit:
            self._shed()
        return self.held > self.limit

    def squeeze(self) -> None:
        if self.on_squeeze is not None:
            self.on_squeeze()

    @property
    def owners(self) -> int:
        """Owners tracked now (backed up, or remembered): bounded, never a leak."""
        return len(self._holders)

    def count(self, buffer: SendBuffer, now: int) -> None:
        """``buffer`` counts ``now`` bytes instead of what it counted; over the limit, shed."""
        change = now - buffer.counted
        self.held += change
        holder = buffer.holder
        if now:
            if holder is None:
                holder = buffer.holder = self._start(buffer)
            holder.held += change
            buffer.counted = now
            if self.held > self.limit:
                self._shed()
        elif holder is not None:
            buffer.counted = 0
            buffer.holder = None
            self._backed_up.discard(buffer)
            holder.held += change
            holder.backed_up -= 1
            if not holder.backed_up and not holder.until:
                del self._holders[buffer.owner]

    def gone(self, buffer: SendBuffer) -> None:
        """``buffer``'s connection went away: it counts no more, and if it was backed up (its
        client left, or was shed, with bytes it never read) its owner is remembered."""
        holder = buffer.holder
        if holder is not None:
            now = self._clock()
            if holder.until <= now:
                holder.since = buffer.backed_up_since
            else:
                holder.since = min(holder.since, buffer.backed_up_since)
            holder.until = now + CHURN_MEMORY_SECONDS
            self._expiring[buffer.owner] = holder.until
            self._expiring.move_to_end(buffer.owner)
            if holder.backed_up > 1:  # its others, backed up now, may be due sooner
                self._no_shed_before = min(self._no_shed_before, holder.since + SHED_AFTER_SECONDS)
            self._forget_expired(now)
        self.count(buffer, 0)

    def _start(self, buffer: SendBuffer) -> Holder:
        """``buffer`` starts to count: when, for shedding, it has been backed up since."""
        now = self._clock()
        self._forget_expired(now)
        holder = self._holders.get(buffer.owner)
        if holder is None:
            holder = self._holders[buffer.owner] = Holder()
        holder.backed_up += 1
        since = now
        if holder.until > now and holder.since < now:
            since = holder.since
            self._no_shed_before = min(self._no_shed_before, since + SHED_AFTER_SECONDS)
        buffer.backed_up_since = since
        self._backed_up.add(buffer)
        return holder

    def _forget_expired(self, now: float) -> None:
        """Owners remembered longer than CHURN_MEMORY_SECONDS are forgotten (amortised: they
        expire in the order they were remembered)."""
        expiring = self._expiring
        while expiring:
            owner, until = next(iter(expiring.items()))
            if until > now:
                return
            del expiring[owner]
            holder = self._holders.get(owner)
            if holder is None or holder.until > now:
                continue
            holder.until = 0.0
            if not holder.backed_up:
                del self._holders[owner]

    def _since(self, buffer: SendBuffer, now: float) -> float:
        """When ``buffer`` counts as backed up since: its own start, or its owner's remembered
        one if earlier (a connection of that owner went away backed up lately)."""
        holder = buffer.holder
        if holder is not None and holder.until > now and holder.since < buffer.backed_up_since:
            return holder.since
        return buffer.backed_up_since

    def _shed(self) -> None:
        """Drop the clients backed up longest, those of the owner that holds the most first
        (then the biggest), until within the limit. A scan of the backed-up clients per client
        dropped: this runs only over the limit, and each one dropped frees what it held."""
        now = self._clock()
        if now < self._no_shed_before:
            return  # nobody backed up long enough yet (checked on every write while over)
        due = now - SHED_AFTER_SECONDS
        while self.held > self.limit:
            eligible = [buffer for buffer in self._backed_up if self._since(buffer, now) <= due]
            if not eligible:
                # Clients backed up from now on come later still: nobody is due before the
                # earliest of these, so a burst over the total does not scan them per write.
                self._no_shed_before = SHED_AFTER_SECONDS + min(
                    (self._since(buffer, now) for buffer in self._backed_up), default=now
                )
                return
            victim = max(eligible, key=_shed_order)
            log.info(
                "backed-up client shed for the node's send total",
                extra={"held": self.held, "limit": self.limit, "bytes": victim.counted},
            )
            victim.shed()
            if self.on_shed is not None:
                self.on_shed()


class Holder:
    """What one owner's (client address's) backed-up buffers hold, and whether one of its
    connections went away backed up lately (``until`` > now: then ``since`` is when the
    earliest of those had backed up)."""

    __slots__ = ("backed_up", "held", "since", "until")

    def __init__(self) -> None:
        self.held = 0
        self.backed_up = 0
        self.since = 0.0
        self.until = 0.0


# asyncio's and uvloop's default high-water mark of a transport's write buffer (64 KiB).
TRANSPORT_HIGH_WATER: Final = 64 * 1024


def _shed_order(buffer: SendBuffer) -> tuple[int, int]:
    """Shed first: the buffer of the owner that holds the most, then the biggest."""
    holder = buffer.holder
    return (holder.held if holder is not None else 0, buffer.counted)


class SendBuffer:
    __slots__ = (
        "_budget",
        "_held",
        "_held_bytes",
        "_limit",
        "_transport",
        "_waiter",
        "backed_up_since",
        "counted",
        "holder",
        "owner",
        "paused",
        "shed_off",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        limit: int,
        budget: SendBudget | None = None,
        owner: str = "",
    ) -> None:
        self._transport = transport
        self._limit = limit
        if limit < TRANSPORT_HIGH_WATER:
            # Over the limit the client lags until resume_writing says it drained, which only
            # a transport paused at its high-water mark calls: with the mark above the limit,
            # a lagging reader that read everything was never told so, and was closed 1013 at
            # ROOMCAST_LAG_TIMEOUT (a limit of 8 KiB: 10 messages missed, never replayed).
            transport.set_write_buffer_limits(high=limit)
        # The node's total, and what this buffer counts in it now: its outstanding bytes while
        # its transport is paused or it holds bytes back, else nothing (below the transport's
        # high-water mark a socket is not backed up, and the transport does not say when it
        # drained: a stale figure there would count bytes long sent).
        self._budget = budget
        self.counted = 0
        # Who it is sent to, as the node's total sheds them: the client's address (its limit
        # key: an IPv6 client's /64), and that owner's entry in the total while counted.
        self.owner = owner
        self.holder: Holder | None = None
        # When it started to count in the node's total (time.monotonic()), or its owner's
        # earlier start when one of the owner's connections went away backed up lately.
        self.backed_up_since = 0.0
        # Dropped for the node's total: nothing more goes to its transport (aborted).
        self.shed_off = False
        # What waits while the transport is paused; made when first needed and dropped once
        # empty (an empty deque costs ~760 bytes, as much as the rest of an idle connection's
        # transport state).
        self._held: deque[bytes] | None = None
        self._held_bytes = 0
        self.paused = False
        # Who waits in wait_drained (a piece-by-piece answer, a catch-up), if anyone.
        self._waiter: asyncio.Future[None] | None = None

    @property
    def outstanding(self) -> int:
        """Bytes queued in the node for this client (transport buffer + held back)."""
        return self._held_bytes + self._transport.get_write_buffer_size()

    @property
    def over(self) -> bool:
        """More than the limit is queued in the node for this client, or its socket is backed
        up while the node holds more than its total for such clients."""
        if self.shed_off:
            return False
        if self.outstanding > self._limit:
            return True
        return self._squeezed()

    def _squeezed(self) -> bool:
        budget = self._budget
        if budget is None or not budget.exhausted or not (self.paused or self._held):
            return False
        budget.squeeze()
        return True

    def belongs_to(self, owner: str) -> None:
        """The client's address is known (a proxy's forwarded one, at the handshake or per HTTP
        request): its bytes count for that owner from now on."""
        if owner == self.owner:
            return
        budget = self._budget
        if budget is not None and self.counted:
            budget.count(self, 0)
        self.owner = owner
        self._count()

    def _count(self) -> None:
        """Report this client's backed-up bytes to the node's total."""
        budget = self._budget
        if budget is None:
            return
        budget.count(self, self.outstanding if self.paused or self._held else 0)

    def shed(self) -> None:
        """Dropped for the node's total: forget what it held, stop counting, and abort the
        connection (a client that does not read would never read a close frame either; its
        owner learns it from connection_lost)."""
        self.release()
        self.shed_off = True
        self._transport.abort()

    @property
    def drained(self) -> bool:
        """Nothing held back, and the transport below its high-water mark."""
        return not self.paused and not self._held

    def write_pieces(self, pieces: list[bytes], size: int, *, force: bool = False) -> bool:
        """:meth:`write` of ``b"".join(pieces)`` (``size`` bytes) without joining them: the
        transport gathers them in one writev call and keeps what the kernel did not take by
        reference. A burst fanned out to many streams shares its pieces, so it is not copied
        once per stream (40 copies of a 1.2 MB burst stalled a node for 90 ms)."""
        if self.shed_off:
            return True
        if not self._may_queue(size, force=force):
            return False
        if self.paused or self._held:
            self._hold(pieces, size)
        elif len(pieces) == 1:
            self._transport.write(pieces[0])
        else:
            self._transport.writelines(pieces)
        return True

    def write(self, data: bytes, *, force: bool = False) -> bool:
        """Queue ``data`` in order after what is queued; False (nothing queued) when the socket
        is backed up and ``data`` would take the client past the limit, unless ``force``.

        Queued data may still leave the client :attr:`over` the limit (the kernel took less of
        a fresh write than the limit): the caller checks that too.
        """
        if self.shed_off:
            return True
        if not self._may_queue(len(data), force=force):
            return False
        if self.paused or self._held:
            self._hold((data,), len(data))
        else:
            # The transport sends at once what the kernel takes and calls pause_writing when
            # the rest crosses its high-water mark: only that rest counts against the client.
            self._transport.write(data)
        return True

    def _may_queue(self, size: int, *, force: bool) -> bool:
        if force:
            return True
        backed_up = self.paused or self._held or self._transport.get_write_buffer_size()
        budget = self._budget
        if budget is not None and budget.exhausted and (backed_up or size > budget.page):
            # The node holds more than its total for backed-up clients: this one may not add
            # more than a page, and nothing once backed up.
            budget.squeeze()
            return False
        return not backed_up or self.outstanding + size <= self._limit

    @property
    def shedding(self) -> bool:
        """The node holds more than its total for backed-up clients: a client whose write was
        refused is dropped rather than left to fall behind with the write forced."""
        return self._budget is not None and self._budget.exhausted

    def _hold(self, pieces: Iterable[bytes], size: int) -> None:
        held = self._held
        if held is None:
            held = self._held = deque()
        held.extend(pieces)
        self._held_bytes += size
        self._count()

    def offer(self, frames: list[bytes], size: int) -> int:
        """:meth:`write_pieces` for the fan-out path (a loop turn's frames for one client, as
        they are: the frames of a room's message are shared by every member, and joining them
        per member copied each 60 KB message once per member: 40 % of a node's time while 400
        members fell behind at once), which also says where the client stands: 0 when queued
        and the client is within the limit, 1 when queued but it is now :attr:`over`, -1 when
        refused (nothing queued).

        A socket that is not backed up is asked for its buffer size once instead of twice:
        after the write at most ``size`` waits in the node, which the limit holds."""
        if self.shed_off:
            return 0
        transport = self._transport
        budget = self._budget
        # Not :attr:`shedding` (two property calls per recipient of every message): the node's
        # total is checked first, and only over its limit does ``exhausted`` run (and shed).
        if (
            not self.paused
            and not self._held
            and size <= self._limit
            and not transport.get_write_buffer_size()
            and (budget is None or budget.held <= budget.limit or not budget.exhausted)
        ):
            if len(frames) == 1:
                transport.write(frames[0])
            else:
                transport.writelines(frames)
            return 0
        if not self.write_pieces(frames, size):
            return -1
        return 1 if self.over else 0

    async def wait_drained(
        self, loop: asyncio.AbstractEventLoop, timeout: float, on_timeout: Callable[[], None]
    ) -> None:
        """Return once :attr:`drained` (the owner calls :meth:`wake` from resume_writing, and
        when the connection ends). A client that has not read it within ``timeout`` does not
        read: ``on_timeout`` is called, which drops it (and wakes this)."""
        if self.drained:
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, on_timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def wake(self) -> bool:
        """Let :meth:`wait_drained` return; False if nobody waited."""
        waiter = self._waiter
        if waiter is None:
            return False
        self._waiter = None
        if not waiter.done():
            waiter.set_result(None)
        return True

    def pause(self) -> None:
        self.paused = True
        self._count()

    def resume(self) -> None:
        """The socket drained below the low-water mark: hand over what waits, piece by piece."""
        self.paused = False
        held = self._held
        while held and not self.paused:
            data = held.popleft()
            self._held_bytes -= len(data)
            self._transport.write(data)
        if not held:
            self._held = None
        self._count()

    def flush(self) -> None:
        """Hand everything held to the transport now (before the end of the stream)."""
        held = self._held
        while held:
            data = held.popleft()
            self._held_bytes -= len(data)
            self._transport.write(data)
        self._held = None
        self._count()

    def discard(self) -> None:
        """Forget what is held back (the connection is being dropped)."""
        self._held = None
        self._held_bytes = 0
        self._count()

    def release(self) -> None:
        """The connection is gone: nothing it had counts in the node's total any more."""
        # Nothing it does from now on counts (a transport's late pause_writing).
        budget, self._budget = self._budget, None
        self._held = None
        self._held_bytes = 0
        if budget is not None:
            budget.gone(self)
