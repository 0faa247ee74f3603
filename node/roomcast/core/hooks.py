"""The application's hooks: when to ask, how long to wait, what a failure means (README "Hooks").

No sockets here: the HTTP client (:mod:`roomcast.net.hook_client`) implements :class:`HookPort`.
Each hook has its own :class:`HookCaller` with

- a timeout for the whole call, retries included: a hook can delay one client, never hang it;
- bounded concurrency: past ``max_concurrency`` calls in flight a call fails at once ("busy")
  instead of queueing without end behind a slow backend;
- a share per client: one client (a token's ``sub``, else its address) holds at most
  ``max_concurrency // CLIENT_SHARE_DIVISOR`` of those slots; its further calls wait their turn
  (within the timeout), so one client's flood cannot make every other client's calls "busy";
- a circuit breaker (:mod:`roomcast.core.circuit`): after failures in a row, calls fail at once
  until a trial call succeeds (for everybody only once that many clients failed: one client's
  failures open it for that client);
- retries only where safe: when nothing of the request was sent (the connection was refused),
  or for hooks that only answer a question (connect, join), never for a sent publish;
- one outcome per call, counted by hook and result, and a latency histogram.

A failed call (error, timeout, unreachable, busy, circuit_open) becomes the hook's fail mode:
``closed`` refuses with ``hook_unavailable``, ``open`` lets the client through unchanged.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from roomcast.core.addresses import limit_key
from roomcast.core.auth import AuthError, Identity
from roomcast.core.circuit import OPEN, CircuitBreaker
from roomcast.runtime.config import FailMode, Settings
from roomcast.runtime.metrics import Metrics
from roomcast.wire import hooks as wire
from roomcast.wire.codes import ErrorCode

log = logging.getLogger("roomcast.hooks")

# Failure results (the metric's "result" label besides allow, deny and rewrite).
ERROR: Final = "error"  # a non-200 status, or an answer that is not a valid verdict
TIMEOUT: Final = "timeout"
UNREACHABLE: Final = "unreachable"  # no connection to the backend
BUSY: Final = "busy"  # max_concurrency calls already in flight
CIRCUIT_OPEN: Final = "circuit_open"
# Failures that say the backend is unwell (busy and circuit_open say nothing new about it).
_BREAKER_FAILURES: Final = frozenset({ERROR, TIMEOUT, UNREACHABLE})
# One client holds at most this fraction of a hook's slots: one user's 80 connections (joins)
# or one address's 300 handshakes took all 64, and every other client's call failed "busy"
# (tests/adversarial/test_redteam9_hook_slots.py). An eighth (8 of 64) still asks a user's 16
# rejoined rooms in two rounds; eight such clients at once are needed to fill the hook.
CLIENT_SHARE_DIVISOR: Final = 8


class HookCallFailed(Exception):
    """The HTTP call did not produce a response; ``sent``: some of the request may have left."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


class HookPort(Protocol):
    """An HTTP client: POST a JSON body, get the status and the body (bounded) back."""

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """Raises HookCallFailed when no response came."""
        ...


@dataclass(frozen=True, slots=True)
class Failed:
    """A call that produced no verdict; ``result`` is one of the failure results above.
    ``own_doing``: its client's share of the slots stayed taken (by its own calls) for the
    whole timeout; refused whatever the fail mode, or a client flooding a slow backend would
    have its surplus let through unasked (unmoderated, with the publish hook failing open)."""

    result: str
    detail: str
    own_doing: bool = False


@dataclass(slots=True)
class _ClientShare:
    """One client's slots of a hook, and how many of its calls hold or wait for one."""

    slots: asyncio.Semaphore
    users: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the client is told: an error code and a reason."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Publication:
    """A message the publish hook let through: its final text, and the id the hook was given."""

    text: str
    message_id: str


class HookCaller:
    """One hook's calls: gate, breaker, timeout, retries, outcome metrics."""

    def __init__(
        self,
        hook: wire.HookName,
        url: str,
        port: HookPort,
        metrics: Metrics,
        *,
        timeout: float,
        max_concurrency: int,
        retries: int,
        breaker: CircuitBreaker,
        idempotent: bool,
    ) -> None:
        self.hook = hook
        self._url = url
        self._port = port
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._retries = retries
        self._idempotent = idempotent
        self.breaker = breaker
        self.in_flight = 0
        self.client_share = max(1, max_concurrency // CLIENT_SHARE_DIVISOR)
        # Clients with calls holding or waiting for a slot (removed with their last call).
        self._shares: dict[str, _ClientShare] = {}
        self._latency = metrics.hook_latency.labels(hook)
        self._results = {
            result: metrics.hook_calls.labels(hook, result)
            for result in ("allow", "deny", "rewrite", ERROR, TIMEOUT, UNREACHABLE, BUSY,
                           CIRCUIT_OPEN)
        }  # fmt: skip
        self._circuit_gauge = metrics.hook_circuit_open.labels(hook)

    async def call(self, body: bytes, client: str | None = None) -> wire.Verdict | Failed:
        """One call; ``client`` (its rate-limit key) waits for one of its own share of the
        slots first, for at most the timeout (then ``busy``, not a failure of the backend)."""
        if client is None:
            return await self._call(body, self._timeout, None, waited=False)
        share = self._shares.get(client)
        if share is None:
            share = self._shares[client] = _ClientShare(asyncio.Semaphore(self.client_share))
        share.users += 1
        try:
            started = time.monotonic()
            waited = share.slots.locked()
            if waited:
                try:
                    async with asyncio.timeout(self._timeout):
                        await share.slots.acquire()
                except TimeoutError:
                    reason = f"{self.client_share} calls of this client already in flight"
                    return self._done(Failed(BUSY, reason, own_doing=True))
            else:
                await share.slots.acquire()  # free: taken without waiting
            try:
                # Nothing waits longer than the timeout, the turn included.
                left = self._timeout - (time.monotonic() - started) if waited else self._timeout
                if left <= 0:
                    return self._done(Failed(BUSY, "its turn came too late", own_doing=True))
                return await self._call(body, left, client, waited=waited)
            finally:
                share.slots.release()
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[client]

    async def _call(
        self, body: bytes, timeout: float, client: str | None, *, waited: bool
    ) -> wire.Verdict | Failed:
        if self.in_flight >= self._max_concurrency:
            return self._done(Failed(BUSY, f"{self._max_concurrency} calls already in flight"))
        if not self.breaker.allow(time.monotonic(), client):
            return self._done(Failed(CIRCUIT_OPEN, "failing fast after repeated failures"))
        self.in_flight += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                outcome = await self._attempts(body)
        except TimeoutError:
            outcome = Failed(TIMEOUT, f"no answer within {timeout:g} s")
        finally:
            self.in_flight -= 1
        self._latency.observe(time.perf_counter() - started)
        if isinstance(outcome, Failed):
            # A call that waited for its client's turn and then ran out of what was left of
            # the timeout says nothing about the backend: a flooding client must not open the
            # circuit for everyone by queueing its own calls.
            if outcome.result != TIMEOUT or not waited:
                self.breaker.failed(time.monotonic(), client)
        else:
            self.breaker.succeeded(time.monotonic())
        return self._done(outcome)

    async def _attempts(self, body: bytes) -> wire.Verdict | Failed:
        attempt = 0
        while True:
            attempt += 1
            retry_left = attempt <= self._retries
            try:
                status, answer = await self._port.post(self._url, body)
            except HookCallFailed as exc:
                if retry_left and (not exc.sent or self._idempotent):
                    continue
                return Failed(ERROR if exc.sent else UNREACHABLE, str(exc))
            if status != 200:
                if retry_left and self._idempotent and status >= 500:
                    continue
                return Failed(ERROR, f"HTTP status {status}")
            try:
                return wire.parse_answer(self.hook, answer)
            except wire.HookAnswerError as exc:
                return Failed(ERROR, str(exc))

    def _done(self, outcome: wire.Verdict | Failed) -> wire.Verdict | Failed:
        if isinstance(outcome, Failed):
            result = outcome.result
            if result in _BREAKER_FAILURES:
                log.warning(
                    "hook failed",
                    extra={"hook": self.hook, "result": result, "detail": outcome.detail},
                )
        elif isinstance(outcome, wire.Deny):
            result = "deny"
        elif isinstance(outcome, wire.Rewrite):
            result = "rewrite"
        else:
            result = "allow"
        self._results[result].inc()
        self._circuit_gauge.set(1 if self.breaker.state == OPEN else 0)
        return outcome


class RoomPatterns:
    """fnmatch patterns of room names, compiled into one expression."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._everything = "*" in patterns
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in patterns))

    def match(self, room: str) -> bool:
        return self._everything or self._regex.match(room) is not None


def _unavailable(hook: str, failure: Failed) -> Refusal:
    return Refusal(
        ErrorCode.HOOK_UNAVAILABLE, f"the application's {hook} hook failed ({failure.result})"
    )


class Hooks:
    """The three hooks of one node, each off unless its URL is set."""

    def __init__(self, settings: Settings, metrics: Metrics, port: HookPort, node_id: str) -> None:
        self._node = node_id
        self._message_ids = itertools.count(1)
        self._instance = f"{node_id}-{time.time_ns():x}"

        def caller(hook: wire.HookName, url: str | None, idempotent: bool) -> HookCaller | None:
            if url is None:
                return None
            return HookCaller(
                hook,
                url,
                port,
                metrics,
                timeout=settings.hook_timeout,
                max_concurrency=settings.hook_max_concurrency,
                retries=settings.hook_retries,
                breaker=CircuitBreaker(settings.hook_breaker_failures, settings.hook_breaker_reset),
                idempotent=idempotent,
            )

        self.connect_caller = caller("connect", settings.hook_connect_url, True)
        self.join_caller = caller("join", settings.hook_join_url, True)
        # Not idempotent: the backend may store the message it is asked about.
        self.publish_caller = caller("publish", settings.hook_publish_url, False)
        self._join_rooms = RoomPatterns(settings.hook_join_rooms)
        self._publish_rooms = RoomPatterns(settings.hook_publish_rooms)
        self._join_fail: FailMode = settings.hook_join_fail_mode
        self._publish_fail: FailMode = settings.hook_publish_fail_mode

    @property
    def authenticates(self) -> bool:
        return self.connect_caller is not None

    def asks_join(self, room: str) -> bool:
        return self.join_caller is not None and self._join_rooms.match(room)

    def asks_publish(self, room: str) -> bool:
        return self.publish_caller is not None and self._publish_rooms.match(room)

    async def connect(self, client_address: str, path: str, headers: Mapping[str, str]) -> Identity:
        """The identity the backend gives this handshake; raises AuthError (always fail-closed:
        no identity can be made up when the backend cannot be asked)."""
        caller = self.connect_caller
        assert caller is not None
        body = wire.connect_request(self._node, client_address, path, headers)
        # Before a handshake the client is its address (an IPv6 client's /64).
        verdict = await caller.call(body, f"ip:{limit_key(client_address)}")
        if isinstance(verdict, Failed):
            refusal = _unavailable("connect", verdict)
            raise AuthError(503, refusal.code, refusal.reason)
        if isinstance(verdict, wire.Deny):
            raise AuthError(403, ErrorCode.CONNECT_DENIED, verdict.reason)
        assert isinstance(verdict, wire.ConnectAllow)
        return Identity(verdict.user, verdict.name, verdict.rooms)

    async def join(
        self,
        connection: str,
        room: str,
        user: str | None,
        username: str,
        client_address: str,
        client: str,
    ) -> wire.Allow | Refusal:
        """Allow (with initial data for the joiner, or None) or a refusal; ``client`` is the
        connection's rate-limit key (its share of the hook's slots)."""
        caller = self.join_caller
        assert caller is not None
        verdict = await caller.call(
            wire.join_request(self._node, connection, room, user, username, client_address),
            client,
        )
        if isinstance(verdict, Failed):
            if self._join_fail == "open" and not verdict.own_doing:
                return wire.Allow()
            return _unavailable("join", verdict)
        if isinstance(verdict, wire.Deny):
            return Refusal(ErrorCode.JOIN_DENIED, verdict.reason)
        assert isinstance(verdict, wire.Allow)
        return verdict

    async def publish(
        self, connection: str, room: str, user: str | None, username: str, text: str, client: str
    ) -> Publication | Refusal:
        """What to publish (the client's text, or the backend's rewrite) or a refusal."""
        caller = self.publish_caller
        assert caller is not None
        message_id = f"{self._instance}-{next(self._message_ids):x}"
        verdict = await caller.call(
            wire.publish_request(self._node, connection, message_id, room, user, username, text),
            client,
        )
        if isinstance(verdict, Failed):
            if self._publish_fail == "open" and not verdict.own_doing:
                return Publication(text, message_id)
            return _unavailable("publish", verdict)
        if isinstance(verdict, wire.Deny):
            return Refusal(ErrorCode.PUBLISH_DENIED, verdict.reason)
        if isinstance(verdict, wire.Rewrite):
            return Publication(verdict.text, message_id)
        return Publication(text, message_id)
