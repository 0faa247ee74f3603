"""The hooks' policy without sockets: verdict parsing, the circuit breaker, the caller's outcomes.

The HTTP side and real backends are in tests/integration/test_hooks.py; here the port is a
plain object answering what each test needs, so every branch is reached deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from roomcast.core.auth import AuthError
from roomcast.core.circuit import (
    CLOSED,
    HALF_OPEN,
    MAX_SUSPECTS,
    OPEN,
    REMEMBERED_CLIENTS,
    CircuitBreaker,
)
from roomcast.core.hooks import (
    BUSY,
    CIRCUIT_OPEN,
    ERROR,
    TIMEOUT,
    UNREACHABLE,
    Failed,
    HookCaller,
    HookCallFailed,
    Hooks,
    Publication,
    Refusal,
    RoomPatterns,
)
from roomcast.runtime.config import load_settings
from roomcast.runtime.metrics import Metrics
from roomcast.wire import hooks as wire
from roomcast.wire.codes import ErrorCode

# Verdicts


def answer(value: object) -> bytes:
    return orjson.dumps(value)


def test_verdicts_of_each_hook() -> None:
    assert wire.parse_answer("join", answer({"result": "allow", "data": {"pinned": 1}})) == (
        wire.Allow({"pinned": 1})
    )
    assert wire.parse_answer("publish", answer({"result": "allow", "data": 1})) == wire.Allow()
    assert wire.parse_answer("publish", answer({"result": "rewrite", "text": "x"})) == (
        wire.Rewrite("x")
    )
    assert wire.parse_answer("join", answer({"result": "deny"})) == wire.Deny(
        "refused by the application"
    )
    connect = wire.parse_answer(
        "connect", answer({"result": "allow", "user": "u1", "name": "Ann", "rooms": ["a*"]})
    )
    assert connect == wire.ConnectAllow("u1", "Ann", ("a*",))


@pytest.mark.parametrize(
    ("hook", "body"),
    [
        ("join", b"not json"),
        ("join", b"[]"),
        ("join", answer({"result": "maybe"})),
        ("join", answer({"result": "rewrite", "text": "x"})),  # only publish rewrites
        ("publish", answer({"result": "rewrite"})),
        ("publish", answer({"result": "deny", "reason": 5})),
        ("connect", answer({"result": "allow"})),  # no user
        ("connect", answer({"result": "allow", "user": ""})),
        ("connect", answer({"result": "allow", "user": "u", "name": "bad\nname"})),
        ("connect", answer({"result": "allow", "user": "u", "rooms": "lobby"})),
        ("connect", answer({"result": "allow", "user": "u", "rooms": [""]})),
    ],
)
def test_anything_else_is_not_a_verdict(hook: wire.HookName, body: bytes) -> None:
    with pytest.raises(wire.HookAnswerError):
        wire.parse_answer(hook, body)


def test_a_long_reason_is_cut() -> None:
    verdict = wire.parse_answer("join", answer({"result": "deny", "reason": "x" * 1000}))
    assert isinstance(verdict, wire.Deny)
    assert len(verdict.reason) == wire.MAX_REASON_CHARS + 1


def test_connect_request_forwards_only_the_listed_headers() -> None:
    body = orjson.loads(
        wire.connect_request("n1", "10.0.0.1", "/chat?x=1", {"cookie": "s=1", "origin": "o"})
    )
    assert body == {
        "hook": "connect",
        "node": "n1",
        "client_address": "10.0.0.1",
        "query": "x=1",
        "headers": {"cookie": "s=1", "origin": "o"},
    }


# Circuit breaker


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # read afresh (mypy would keep the narrowing of an earlier assert)


def test_breaker_opens_after_failures_in_a_row_and_recovers_through_one_trial() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    for _ in range(2):
        assert breaker.allow(0.0)
        breaker.failed(0.0)
    breaker.succeeded(0.0)  # a success in between: the count starts again
    for _ in range(3):
        assert breaker.allow(1.0)
        breaker.failed(1.0)
    assert state(breaker) == OPEN
    assert not breaker.allow(10.9)
    assert breaker.allow(11.0)  # the trial
    assert state(breaker) == HALF_OPEN
    assert not breaker.allow(11.0)  # only one trial at a time
    breaker.failed(11.5)
    assert state(breaker) == OPEN
    assert not breaker.allow(21.0)
    assert breaker.allow(21.5)
    breaker.succeeded(21.5)
    assert state(breaker) == CLOSED
    assert breaker.allow(21.5) and breaker.allow(21.5)


def test_one_clients_failures_open_the_circuit_for_that_client_alone() -> None:
    """A backend failing one client's input is not down: others' calls still go through."""
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    for _ in range(3):
        assert breaker.allow(0.0, "sub:alice")
        breaker.failed(0.0, "sub:alice")
    assert state(breaker) == OPEN and not breaker.for_everybody
    assert not breaker.allow(1.0, "sub:alice")  # fails fast for her
    assert breaker.allow(1.0, "sub:bob") and breaker.allow(1.0, "sub:bob")
    breaker.succeeded(1.0)  # bob's call: the backend answers, so it is closed again
    assert state(breaker) == CLOSED
    assert breaker.allow(1.0, "sub:alice")


def test_failures_of_as_many_clients_as_the_threshold_open_it_for_everybody() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    for client in ("sub:a", "sub:a", "sub:a", "sub:b"):  # open for a; then b fails too
        breaker.failed(0.0, client)
    assert state(breaker) == OPEN and not breaker.for_everybody
    assert breaker.allow(0.5, "sub:c")
    breaker.failed(0.5, "sub:c")
    assert breaker.for_everybody
    assert not breaker.allow(1.0, "sub:d")
    assert breaker.allow(10.0, "sub:d")  # the trial, after reset_after
    assert not breaker.allow(10.0, "sub:e")


def open_for_everybody(breaker: CircuitBreaker, now: float, *clients: str) -> None:
    for client in clients:
        assert breaker.allow(now, client)
        breaker.failed(now, client)
    assert state(breaker) == OPEN and breaker.for_everybody


def test_clients_whose_failures_were_closed_by_a_success_count_for_themselves_alone() -> None:
    """Five accounts sending what the backend fails on opened it for everybody, every time the
    circuit closed again; now each outage for everybody costs them new clients."""
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    open_for_everybody(breaker, 0.0, "sub:a", "sub:b", "sub:c")
    assert breaker.allow(10.0, "sub:d")  # a bystander's trial
    breaker.succeeded(10.5)
    for client in ("sub:a", "sub:b", "sub:c"):
        assert breaker.allow(11.0, client)
        breaker.failed(11.0, client)
    assert state(breaker) == OPEN and not breaker.for_everybody
    assert not breaker.allow(12.0, "sub:a")
    assert breaker.allow(12.0, "sub:d")  # the others are not held off
    breaker.failed(12.0, "sub:x")  # a client not on probation still counts
    assert not breaker.for_everybody
    breaker.succeeded(13.0)
    # Probation ends (30 reset times after the success that closed it): they count again.
    open_for_everybody(breaker, 13.0 + 300.0, "sub:a", "sub:b", "sub:c")


def test_the_trial_goes_to_a_bystander_before_a_suspect() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    open_for_everybody(breaker, 0.0, "sub:a", "sub:b", "sub:c")
    assert not breaker.allow(1.0, "sub:bob")  # a bystander refused meanwhile
    assert not breaker.allow(10.0, "sub:a")  # a suspect may not take the trial from bob...
    assert breaker.allow(10.5, "sub:bob")  # ...who gets it
    breaker.failed(11.0, "sub:bob")  # the backend is really down: open again
    assert not breaker.allow(21.0, "sub:a")
    # Nobody else came for one more reset time: a suspect is tried, or a real outage of a
    # quiet node would never be tried again.
    assert breaker.allow(31.0, "sub:a")


def test_with_only_suspects_calling_the_trial_comes_after_reset_after() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    open_for_everybody(breaker, 0.0, "sub:a", "sub:b", "sub:c")
    assert not breaker.allow(5.0, "sub:a")
    assert breaker.allow(10.0, "sub:b")
    breaker.succeeded(10.2)
    assert state(breaker) == CLOSED


def test_clients_on_probation_are_remembered_up_to_a_bound() -> None:
    breaker = CircuitBreaker(failures=2, reset_after=1.0)
    now = 0.0
    for batch in range(REMEMBERED_CLIENTS // MAX_SUSPECTS + 1):
        for index in range(MAX_SUSPECTS):
            breaker.failed(now, f"sub:{batch}-{index}")
        breaker.succeeded(now)
    # The first batch was forgotten first: its clients count again within the probation.
    breaker.failed(now, "sub:0-0")
    breaker.failed(now, "sub:0-1")
    assert breaker.for_everybody


# The caller


Reply = Callable[[bytes], Awaitable[tuple[int, bytes]]]


class ScriptedPort:
    """Answers each call with the next reply of its script (the last one repeats)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.calls = 0

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return await reply(body)


def ok(value: object) -> Reply:
    async def reply(body: bytes) -> tuple[int, bytes]:
        return 200, answer(value)

    return reply


def status(code: int) -> Reply:
    async def reply(body: bytes) -> tuple[int, bytes]:
        return code, b"{}"

    return reply


def refused(sent: bool) -> Reply:
    async def reply(body: bytes) -> tuple[int, bytes]:
        raise HookCallFailed("refused", sent=sent)

    return reply


def stalled(gate: asyncio.Event) -> Reply:
    async def reply(body: bytes) -> tuple[int, bytes]:
        await gate.wait()
        return 200, answer({"result": "allow"})

    return reply


def caller(
    port: ScriptedPort,
    hook: wire.HookName = "join",
    *,
    idempotent: bool = True,
    retries: int = 1,
    timeout: float = 5.0,
    max_concurrency: int = 8,
) -> tuple[HookCaller, Metrics]:
    metrics = Metrics(CollectorRegistry())
    made = HookCaller(
        hook,
        "http://backend/hook",
        port,
        metrics,
        timeout=timeout,
        max_concurrency=max_concurrency,
        retries=retries,
        breaker=CircuitBreaker(2, 60.0),
        idempotent=idempotent,
    )
    return made, metrics


def calls(metrics: Metrics, hook: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "roomcast_hook_calls_total", {"hook": hook, "result": result}
    )
    return value or 0.0


async def test_a_refused_connection_is_retried_for_any_hook() -> None:
    port = ScriptedPort(refused(sent=False), ok({"result": "allow"}))
    hook, metrics = caller(port, "publish", idempotent=False)
    assert await hook.call(b"{}") == wire.Allow()
    assert port.calls == 2
    assert calls(metrics, "publish", "allow") == 1


async def test_a_sent_publish_is_never_retried() -> None:
    port = ScriptedPort(refused(sent=True), ok({"result": "allow"}))
    hook, _ = caller(port, "publish", idempotent=False)
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == ERROR
    assert port.calls == 1


async def test_an_idempotent_hook_retries_a_server_error_once() -> None:
    port = ScriptedPort(status(502), status(502), ok({"result": "deny", "reason": "no"}))
    hook, _ = caller(port)
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == ERROR
    assert port.calls == 2  # one retry (ROOMCAST_HOOK_RETRIES=1), not more


async def test_unreachable_timeout_and_bad_answers_are_failures() -> None:
    hook, metrics = caller(ScriptedPort(refused(sent=False)), retries=0)
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == UNREACHABLE
    never = asyncio.Event()
    hook, metrics = caller(ScriptedPort(stalled(never)), timeout=0.05)
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == TIMEOUT
    assert calls(metrics, "join", TIMEOUT) == 1
    hook, metrics = caller(ScriptedPort(ok({"result": "perhaps"})))
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == ERROR


async def test_calls_past_the_concurrency_bound_fail_at_once() -> None:
    gate = asyncio.Event()
    hook, metrics = caller(ScriptedPort(stalled(gate)), max_concurrency=2)
    first = asyncio.ensure_future(hook.call(b"{}"))
    second = asyncio.ensure_future(hook.call(b"{}"))
    await asyncio.sleep(0)
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == BUSY
    gate.set()
    assert await first == wire.Allow() and await second == wire.Allow()
    assert hook.in_flight == 0
    assert calls(metrics, "join", BUSY) == 1
    assert calls(metrics, "join", "allow") == 2


async def test_one_client_holds_its_share_of_the_slots_and_waits_its_turn() -> None:
    """A client past its share (an eighth of the slots) waits; others still find free slots."""
    gate = asyncio.Event()
    port = ScriptedPort(stalled(gate))
    hook, metrics = caller(port, max_concurrency=16)
    assert hook.client_share == 2
    flood = [asyncio.ensure_future(hook.call(b"{}", "sub:mallory")) for _ in range(5)]
    await asyncio.sleep(0)
    assert hook.in_flight == 2  # the other three wait for mallory's own slots
    other = asyncio.ensure_future(hook.call(b"{}", "sub:ann"))
    await asyncio.sleep(0)
    assert hook.in_flight == 3
    gate.set()
    assert await other == wire.Allow()
    assert await asyncio.gather(*flood) == [wire.Allow()] * 5
    assert port.calls == 6 and hook.in_flight == 0
    assert calls(metrics, "join", BUSY) == 0


async def test_a_turn_not_come_within_the_timeout_is_busy_and_spares_the_breaker() -> None:
    never = asyncio.Event()
    hook, metrics = caller(ScriptedPort(stalled(never)), max_concurrency=8, timeout=0.05)
    outcomes = await asyncio.gather(*(hook.call(b"{}", "ip:198.51.100.1") for _ in range(4)))
    results = [o.result for o in outcomes if isinstance(o, Failed)]
    assert results[0] == TIMEOUT and len(results) == 4
    # The turns end with the first call's timeout: one may get the slot with what is left
    # (and time out uncounted), the rest are busy.
    assert results.count(BUSY) >= 2, results
    assert hook.breaker.state == CLOSED  # one counted timeout; it opens after 2
    assert calls(metrics, "join", BUSY) == results.count(BUSY)


async def test_a_waited_call_that_runs_out_of_time_does_not_open_the_circuit() -> None:
    gate = asyncio.Event()

    async def slow_then_stalled(body: bytes) -> tuple[int, bytes]:
        await gate.wait()
        await asyncio.Event().wait()
        return 200, b""

    hook, _ = caller(ScriptedPort(stalled(gate), slow_then_stalled), max_concurrency=8, timeout=0.2)
    first = asyncio.ensure_future(hook.call(b"{}", "sub:mallory"))
    waiting = asyncio.ensure_future(hook.call(b"{}", "sub:mallory"))
    await asyncio.sleep(0.1)
    gate.set()  # the first is answered; the second gets the ~0.1 s left and times out
    assert await first == wire.Allow()
    outcome = await waiting
    assert isinstance(outcome, Failed) and outcome.result == TIMEOUT
    assert hook.breaker.state == CLOSED
    breaker: CircuitBreaker = hook.breaker  # its state changes under the calls below
    failures = [hook.call(b"{}") for _ in range(2)]  # ...while its own timeouts still count
    assert [o.result for o in await asyncio.gather(*failures) if isinstance(o, Failed)] == [
        TIMEOUT,
        TIMEOUT,
    ]
    assert breaker.state == OPEN


async def test_the_open_circuit_fails_fast_without_calling() -> None:
    port = ScriptedPort(status(500))
    hook, metrics = caller(port, retries=0)
    for _ in range(2):
        await hook.call(b"{}")
    assert port.calls == 2
    outcome = await hook.call(b"{}")
    assert isinstance(outcome, Failed) and outcome.result == CIRCUIT_OPEN
    assert port.calls == 2
    gauge = metrics.registry.get_sample_value("roomcast_hook_circuit_open", {"hook": "join"})
    assert gauge == 1


# The node's view: fail modes and refusals


def hooks_with(port: ScriptedPort, **env: str) -> Hooks:
    settings = load_settings(
        {
            "ROOMCAST_HOOK_CONNECT_URL": "http://backend/connect",
            "ROOMCAST_HOOK_JOIN_URL": "http://backend/join",
            "ROOMCAST_HOOK_PUBLISH_URL": "http://backend/publish",
            "ROOMCAST_HOOK_RETRIES": "0",
            **env,
        }
    )
    return Hooks(settings, Metrics(CollectorRegistry()), port, "n1")


async def test_fail_closed_refuses_with_hook_unavailable_and_fail_open_lets_through() -> None:
    closed = hooks_with(ScriptedPort(status(500)))
    join = await closed.join("c1", "lobby", None, "ann", "127.0.0.1", "ip:127.0.0.1")
    assert isinstance(join, Refusal) and join.code == ErrorCode.HOOK_UNAVAILABLE
    text = await closed.publish("c1", "lobby", None, "ann", "hi", "ip:127.0.0.1")
    assert isinstance(text, Refusal) and text.code == ErrorCode.HOOK_UNAVAILABLE
    with pytest.raises(AuthError) as refused_connect:
        await closed.connect("127.0.0.1", "/chat", {})
    assert refused_connect.value.status == 503
    opened = hooks_with(
        ScriptedPort(status(500)),
        ROOMCAST_HOOK_JOIN_FAIL_MODE="open",
        ROOMCAST_HOOK_PUBLISH_FAIL_MODE="open",
    )
    joined = await opened.join("c1", "lobby", None, "ann", "127.0.0.1", "ip:127.0.0.1")
    assert joined == wire.Allow()
    published = await opened.publish("c1", "lobby", None, "ann", "hi", "ip:127.0.0.1")
    assert isinstance(published, Publication) and published.text == "hi"


async def test_a_clients_own_backlog_is_refused_even_where_the_hook_fails_open() -> None:
    """Fail-open lets a message through when the backend fails, not when its sender's own
    calls held its share for the whole timeout (unmoderated surplus of a flood)."""
    never = asyncio.Event()
    hooks = hooks_with(
        ScriptedPort(stalled(never)),
        ROOMCAST_HOOK_PUBLISH_FAIL_MODE="open",
        ROOMCAST_HOOK_MAX_CONCURRENCY="8",
        ROOMCAST_HOOK_TIMEOUT="0.05",
    )
    outcomes = await asyncio.gather(
        *(hooks.publish("c1", "lobby", "u1", "ann", "hi", "sub:u1") for _ in range(3))
    )
    assert isinstance(outcomes[0], Publication)  # the backend timed out: fails open
    assert any(isinstance(o, Refusal) and "(busy)" in o.reason for o in outcomes[1:]), outcomes


async def test_denials_and_rewrites_reach_the_node_as_codes_and_text() -> None:
    hooks = hooks_with(ScriptedPort(ok({"result": "deny", "reason": "members only"})))
    join = await hooks.join("c1", "lobby", "u1", "ann", "127.0.0.1", "ip:127.0.0.1")
    assert join == Refusal(ErrorCode.JOIN_DENIED, "members only")
    published = await hooks.publish("c1", "lobby", "u1", "ann", "hi", "sub:u1")
    assert published == Refusal(ErrorCode.PUBLISH_DENIED, "members only")
    with pytest.raises(AuthError) as denied:
        await hooks.connect("127.0.0.1", "/chat", {})
    assert (denied.value.status, denied.value.code) == (403, ErrorCode.CONNECT_DENIED)
    rewriting = hooks_with(ScriptedPort(ok({"result": "rewrite", "text": "h*"})))
    rewritten = await rewriting.publish("c1", "lobby", "u1", "ann", "hi", "sub:u1")
    assert isinstance(rewritten, Publication) and rewritten.text == "h*"
    assert rewritten.message_id.startswith("n1-")


def test_room_patterns_pick_the_rooms_a_hook_is_asked_for() -> None:
    hooks = hooks_with(
        ScriptedPort(ok({})),
        ROOMCAST_HOOK_JOIN_ROOMS="support:*,vip",
        ROOMCAST_HOOK_PUBLISH_ROOMS="*",
    )
    assert hooks.asks_join("support:42") and hooks.asks_join("vip")
    assert not hooks.asks_join("lobby") and not hooks.asks_join("vip2")
    assert hooks.asks_publish("anything")
    assert RoomPatterns(("dm:*",)).match("dm:a:b")
    assert not hooks_with(ScriptedPort(ok({})), ROOMCAST_HOOK_JOIN_URL="").asks_join("vip")
