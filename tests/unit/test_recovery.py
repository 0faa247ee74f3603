"""The catch-up/live switch-over, as a property over every interleaving (no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.broker import JoinReply
from roomcast.core.catch_up import CatchUp
from roomcast.wire.recovery import EPOCH_CHANGED, RECOVERED, TOO_OLD


def message(offset: int) -> bytes:
    return b"m%d" % offset


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, int, int, int, int, list[int]]:
    """(since, subscribed_at, script_at, reply_at, end, history_size, typing positions).

    The room's stream has offsets 1..end. The node's subscription is confirmed when the latest
    offset is ``subscribed_at``; the join script runs atomically when it is ``script_at`` and
    publishes the joiner's marker right there; the script's reply reaches the node when the
    node has seen the stream up to ``reply_at`` (before or after the marker: they travel on
    different connections); the client last saw ``since``.
    """
    end = draw(st.integers(0, 60))
    subscribed_at = draw(st.integers(0, end))
    script_at = draw(st.integers(subscribed_at, end))
    reply_at = draw(st.integers(subscribed_at, end))
    since = draw(st.integers(0, script_at))
    history_size = draw(st.integers(1, 40))
    typing = draw(st.lists(st.integers(subscribed_at, end), max_size=5))
    return since, subscribed_at, script_at, reply_at, end, history_size, typing


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_switch_over_has_no_gap_and_no_duplicate(
    scenario: tuple[int, int, int, int, int, int, list[int]],
) -> None:
    since, subscribed_at, script_at, reply_at, end, history_size, typing = scenario
    # What the node receives on the room's channel, in order, from its subscription on:
    # messages, typing events (offset 0), and the marker right after offset script_at.
    stream: list[tuple[int, bytes, bool]] = []
    if script_at == subscribed_at:
        stream.append((0, b"marker", True))
    for offset in range(subscribed_at + 1, end + 1):
        stream.append((offset, message(offset), False))
        if offset in typing:
            stream.append((0, b"typing", False))
        if offset == script_at:
            stream.append((0, b"marker", True))
    kept_from = max(1, script_at - history_size + 1)  # the history list at script time
    if since < kept_from - 1:
        reply = JoinReply("e", script_at, TOO_OLD)
    else:
        missed = [message(o) for o in range(since + 1, script_at + 1)]
        reply = JoinReply("e", script_at, RECOVERED, missed)
    # The join completes once both the reply and the marker are in; then the rest is live.
    catch_up = CatchUp(limit=1000)
    seen = subscribed_at  # the latest offset the node has received
    switch_at = len(stream)
    for position, (offset, event, is_marker) in enumerate(stream):
        if catch_up.marker_seen and seen >= reply_at:
            switch_at = position
            break
        catch_up.see(offset, event, is_marker)
        seen = max(seen, offset)
    delivered = catch_up.finish(reply)
    delivered += [event for _, event, is_marker in stream[switch_at:] if not is_marker]
    delivered = [event for event in delivered if event != b"typing"]
    if reply.status == RECOVERED:
        assert delivered == [message(o) for o in range(since + 1, end + 1)]
    else:
        # Not recovered: the client is told so, and gets exactly the live stream after L.
        assert delivered == [message(o) for o in range(script_at + 1, end + 1)]
    assert catch_up.held == []


def test_not_recovered_drops_history_but_keeps_live_after_latest() -> None:
    catch_up = CatchUp(limit=10)
    catch_up.see(4, message(4), is_marker=False)  # before our join point: not for us
    catch_up.see(0, b"marker", is_marker=True)
    catch_up.see(6, message(6), is_marker=False)
    reply = JoinReply("new", 5, EPOCH_CHANGED, [message(5)])
    assert catch_up.finish(reply) == [message(6)]


def test_hold_is_bounded() -> None:
    catch_up = CatchUp(limit=3)
    catch_up.see(0, b"marker", is_marker=True)
    for offset in range(1, 6):
        catch_up.see(offset, message(offset), is_marker=False)
    assert len(catch_up.held) == 3
    assert catch_up.overflowed


def test_hold_is_bounded_in_bytes_too() -> None:
    # What a joiner is sent at once must fit its send bound, however large the room's events.
    catch_up = CatchUp(limit=1000, byte_limit=2 * len(message(1)))
    catch_up.see(0, b"marker", is_marker=True)
    for offset in range(1, 4):
        catch_up.see(offset, message(offset), is_marker=False)
    assert [offset for offset, _ in catch_up.held] == [1, 2]
    assert catch_up.overflowed


def test_new_epochs_are_twelve_hex_digits_and_do_not_repeat() -> None:
    from roomcast.broker.memory import new_epoch

    epochs = [new_epoch() for _ in range(50_000)]
    assert len(set(epochs)) == len(epochs)
    assert all(len(e) == 12 and int(e, 16) >= 0 for e in epochs)
    assert len({e[0] for e in epochs}) == 16  # the leading digit varies: no fixed prefix
