"""The node's own frame parser (Connection._receive_frames) against websockets' ServerProtocol.

An open, uncompressed connection drops websockets' protocol and parses final masked text, ping
and pong frames itself, handing anything else to a websockets protocol made at that frame's
start. A client, hostile or not, must not be able to tell: the same byte stream, cut into reads
anywhere, must give the application the same calls (texts, rejections, close) and the client the
same frames (pongs, close code) as a connection whose every frame websockets parses (the node
before the change), and websockets alone must agree on every protocol-level close.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace
from typing import cast

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from roomcast.net.transport import Connection
from roomcast.runtime.config import Settings
from tests.support.wsharness import (
    FakeTransport,
    RecordingApp,
    WsClient,
    make_server,
    make_settings,
    settle,
)

MAX_FRAME = 300
# Two profiles: limits no stream reaches (pure parsing), and a tight frame/byte budget that
# generated streams hit (floods must be charged and closed the same way on both paths). The
# refill rates are negligible over a test, so both runs of one example see the same budget.
ROOMY = make_settings(
    max_frame_bytes=MAX_FRAME,
    max_fragments=6,
    rate_limit_per_second=0.001,
    rate_limit_burst=10_000,
    client_receive_bytes_per_second=1024,
    client_receive_bytes_burst=10_000_000,
)
TIGHT = make_settings(
    max_frame_bytes=MAX_FRAME,
    max_fragments=6,
    rate_limit_per_second=0.001,
    rate_limit_burst=5,
    client_receive_bytes_per_second=1024,
    client_receive_bytes_burst=9 * 1024,
)
# Sizes each side of the frame limit and of the 7-bit/16-bit length boundaries.
EDGE_SIZES = [0, 1, 124, 125, 126, 127, MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, 65535 + 1]
CLOSE_CODES = [999, 1000, 1001, 1002, 1004, 1005, 1006, 1007, 1011, 1012, 1015, 2999, 3000, 4999]
CLOSE_CODES += [5000, 65535]
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\xe2\x82", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


@dataclass(frozen=True)
class RawFrame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    encoding: str  # "min", "16" or "64": how the payload length is written
    mask: bytes
    payload: bytes
    # Only the header (and maybe a few payload bytes) is sent: a huge claimed length.
    truncated: bool = False

    def serialize(self) -> bytes:
        head = bytes([(0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode])
        length = len(self.payload)
        bit = 0x80 if self.masked else 0
        if self.encoding == "64" or length > 0xFFFF:
            head += bytes([bit | 127]) + length.to_bytes(8, "big")
        elif self.encoding == "16" or length > 125:
            head += bytes([bit | 126]) + length.to_bytes(2, "big")
        else:
            head += bytes([bit | length])
        if not self.masked:
            return head + (self.payload[:3] if self.truncated else self.payload)
        body = bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))
        return head + self.mask + (body[:3] if self.truncated else body)


def text_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(EDGE_SIZES[:-1]).map(lambda n: b"x" * n),
        st.text(max_size=20).map(str.encode),
        st.sampled_from(INVALID_UTF8),
        st.builds(
            lambda s, bad: s.encode() + bad, st.text(max_size=5), st.sampled_from(INVALID_UTF8)
        ),
        st.just("é".encode() * 70),  # 140 bytes of 2-byte characters: a 16-bit length
    )


def close_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.just(b"\x03"),  # one byte: not a code
        st.builds(
            lambda code, reason: code.to_bytes(2, "big") + reason,
            st.sampled_from(CLOSE_CODES),
            st.one_of(st.text(max_size=10).map(str.encode), st.sampled_from(INVALID_UTF8)),
        ),
        st.just(b"\x03\xe8" + b"r" * 124),  # 126 bytes: a control frame too long
    )


@st.composite
def raw_frames(draw: st.DrawFn) -> RawFrame:
    opcode = draw(
        st.one_of(
            st.sampled_from([0x1] * 6 + [0x9] * 3 + [0xA] * 2 + [0x0, 0x2, 0x8]),
            st.integers(0, 15),
        )
    )
    if opcode == 0x8:
        payload = draw(close_payloads())
    elif opcode in (0x9, 0xA):
        size = draw(st.sampled_from([0, 1, 4, 5, 8, 125, 126]))
        payload = draw(st.binary(min_size=size, max_size=size))
    else:
        payload = draw(text_payloads())
    if draw(st.booleans()):  # a well-formed frame: the node's own path goes on past it
        return RawFrame(
            True, 0, opcode, True, "min", draw(st.binary(min_size=4, max_size=4)), payload
        )
    return RawFrame(
        fin=draw(st.sampled_from([True] * 4 + [False])),
        rsv=draw(st.sampled_from([0] * 5 + [1, 2, 4, 7])),
        opcode=opcode,
        masked=draw(st.sampled_from([True] * 6 + [False])),
        encoding=draw(st.sampled_from(["min"] * 8 + ["16", "64"])),
        mask=draw(st.binary(min_size=4, max_size=4)),
        payload=payload,
        truncated=False,
    )


@st.composite
def fragmented_message(draw: st.DrawFn) -> list[RawFrame]:
    """A text message in fragments with control frames between them (legal), maybe split
    inside a UTF-8 character."""
    text = draw(st.text(min_size=1, max_size=12)).encode() + draw(
        st.sampled_from([b"", b"\xff", "é".encode()])
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=7)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    mask = draw(st.binary(min_size=4, max_size=4))
    frames: list[RawFrame] = []
    for index, part in enumerate(parts):
        opcode = 0x1 if index == 0 else 0x0
        frames.append(RawFrame(index == len(parts) - 1, 0, opcode, True, "min", mask, part))
        if draw(st.booleans()):
            ping = draw(st.binary(max_size=4))
            frames.append(
                RawFrame(True, 0, draw(st.sampled_from([0x9, 0xA])), True, "min", mask, ping)
            )
    return frames


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    pieces = draw(
        st.lists(
            st.one_of(raw_frames().map(lambda f: [f]), fragmented_message()), min_size=1, max_size=8
        )
    )
    frames = [frame for piece in pieces for frame in piece]
    if frames and draw(st.integers(0, 9)) == 0:
        # The last frame claims more than arrives (a 16-bit or 64-bit length: a slowloris).
        last = frames[-1]
        frames[-1] = RawFrame(
            last.fin,
            last.rsv,
            last.opcode,
            last.masked,
            draw(st.sampled_from(["16", "64"])),
            last.mask,
            b"z" * draw(st.sampled_from([200, MAX_FRAME, 70_000])),
            truncated=True,
        )
    return b"".join(frame.serialize() for frame in frames)


@dataclass
class Outcome:
    calls: list[tuple[str, str]]
    frames: list[tuple[int, bool, bytes]]  # what the server wrote after its 101
    ended: bool
    closed: bool
    max_inbuf: int


def handshake_request() -> bytes:
    client = ClientProtocol(parse_uri("ws://testserver/chat"))
    client.send_request(client.connect())
    return b"".join(client.data_to_send())


def server_frames(written: bytes) -> list[tuple[int, bool, bytes]]:
    head, sep, rest = written.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 101"), head[:40]
    reader = StreamReader()
    reader.feed_data(rest)
    reader.feed_eof()
    frames = []
    parser = Frame.parse(reader.read_exact, mask=False)
    while reader.buffer:
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
            frames.append((int(frame.opcode), frame.fin, bytes(frame.data)))
            parser = Frame.parse(reader.read_exact, mask=False)
    return frames


async def run(
    stream: bytes, cuts: list[int], glued: int, eof: bool, profile: Settings, *, light: bool
) -> Outcome:
    app = RecordingApp()
    server = make_server(app, profile)
    transport = FakeTransport()
    conn: Connection = server._new_connection()
    if not light:
        # The reference: websockets' protocol is never dropped, so it parses every frame (the
        # node before it parsed frames itself).
        conn._request_only = False
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    request = handshake_request()
    conn.data_received(request + stream[:glued])
    await asyncio.sleep(0)
    assert conn.opened
    assert (conn.proto is None) == light or glued > 0 or conn.closed
    max_inbuf = 0
    pos = glued
    index = 0
    while pos < len(stream):
        size = cuts[index % len(cuts)] if cuts else len(stream)
        index += 1
        conn.data_received(stream[pos : pos + size])
        await asyncio.sleep(0)  # a loop turn between reads, as on a socket: answers go out
        pos += size
        max_inbuf = max(max_inbuf, len(conn._inbuf or b""))
    if eof:
        conn.eof_received()
        conn.connection_lost(None)
    await settle()
    return Outcome(
        calls=app.calls,
        frames=server_frames(transport.take()),
        ended=transport.ended,
        closed=conn.closed,
        max_inbuf=max_inbuf,
    )


def websockets_alone(stream: bytes) -> Close | None:
    """The close a bare websockets ServerProtocol sends for the stream (None if it sends none)."""
    proto = ServerProtocol(state=State.OPEN, max_size=MAX_FRAME)
    proto.receive_data(stream)
    return proto.close_sent


# Rejections after which the connection is failed.
FATAL = {
    "flood",
    "invalid_utf8",
    "binary_frame",
    "too_many_fragments",
    "protocol_violation",
    "frame_too_big",
}


# What the application closes with, for the rejections it decides itself.
APP_CLOSES = {"flood": 1008, "invalid_utf8": 1007, "binary_frame": 1003, "too_many_fragments": 1009}


def first_failure(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The calls up to the first rejection that fails the connection, then its close: the same
    read may hold a later frame websockets failed on first (see the test)."""
    for index, (kind, code) in enumerate(calls):
        if kind == "rejected" and code in FATAL:
            rest = [call for call in calls[index + 1 :] if call[0] == "close"]
            return calls[: index + 1] + rest
    return calls


def until_failure(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The calls up to and with the first rejection that fails the connection."""
    for index, (kind, code) in enumerate(calls):
        if kind == "rejected" and code in FATAL:
            return calls[: index + 1]
    return calls


def kind(frames: list[tuple[int, bool, bytes]], *opcodes: int) -> list[tuple[int, bool, bytes]]:
    return [f for f in frames if f[0] in opcodes]


def clean(opcode: int, payload: bytes, encoding: str = "min", *, fin: bool = True) -> bytes:
    return RawFrame(fin, 0, opcode, True, encoding, b"\x01\x02\x03\x04", payload).serialize()


# Edges a random search may miss in a bounded run: each side of the frame limit, the largest
# ping, a control frame one byte too long, non-minimal lengths, a claimed length far past the
# limit arriving byte by byte, a ping between fragments, invalid UTF-8, a client's close, and
# invalid UTF-8 with a client's close behind it in one read (websockets echoes the close first).
EDGES = [
    clean(1, b"x" * MAX_FRAME) + clean(1, b"x" * (MAX_FRAME + 1)),
    clean(9, bytes(range(125))) + clean(9, b"p" * 126),
    clean(1, b"seven", "16") + clean(9, b"ping", "16") + clean(1, b"x", "64"),
    clean(1, b"a", fin=False) + clean(9, b"mid") + clean(0, b"b") + clean(1, b"after"),
    clean(1, b"\xc3") + clean(9, b"late"),
    clean(8, b"\x03\xe8bye") + clean(1, b"after close"),
    clean(8, b"\x03\xe7") + clean(10, b"pong"),
    clean(1, b"\xff") + clean(9, b"ping") + clean(8, b""),
]


@settings(
    max_examples=int(os.environ.get("ROOMCAST_FUZZ_EXAMPLES", "120")),
    deadline=None,
    # Deterministic in CI; ROOMCAST_FUZZ_RANDOM=1 (with ROOMCAST_FUZZ_EXAMPLES) hunts further.
    derandomize=not os.environ.get("ROOMCAST_FUZZ_RANDOM"),
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stream=streams(),
    cuts=st.lists(st.integers(1, 80), max_size=6),
    glue=st.integers(0, 3),
    eof=st.booleans(),
    tight=st.booleans(),
)
@example(stream=EDGES[0], cuts=[], glue=0, eof=False, tight=False)
@example(stream=EDGES[1], cuts=[3], glue=0, eof=False, tight=False)
@example(stream=EDGES[2], cuts=[], glue=1, eof=True, tight=False)
@example(stream=EDGES[3], cuts=[5], glue=0, eof=False, tight=False)
@example(stream=EDGES[4], cuts=[], glue=0, eof=False, tight=False)
@example(stream=EDGES[5], cuts=[2], glue=0, eof=False, tight=False)
@example(stream=EDGES[6], cuts=[], glue=0, eof=False, tight=False)
@example(stream=EDGES[7], cuts=[], glue=0, eof=False, tight=True)
@example(
    stream=b"\x81\xfe\xff\xff" + bytes(4) + b"z" * 40, cuts=[1], glue=0, eof=False, tight=False
)
@example(stream=b"\x81\xff" + (2**63).to_bytes(8, "big"), cuts=[1], glue=0, eof=False, tight=False)
async def test_node_parser_matches_websockets(
    stream: bytes, cuts: list[int], glue: int, eof: bool, tight: bool
) -> None:
    # glue: 0 frames apart from the request, else part of the stream in the request's read.
    glued = 0 if glue == 0 else min(len(stream), glue * 7)
    profile = TIGHT if tight else ROOMY
    light = await run(stream, cuts, glued, eof, profile, light=True)
    full = await run(stream, cuts, glued, eof, profile, light=False)
    failed_by_app = [c for k, c in light.calls if k == "rejected" and c in APP_CLOSES]
    # The node closes for the first bad frame; websockets may have closed first for a later
    # frame of the same read (a protocol error, a client's close) before the application failed
    # the earlier one (so may websockets in the node, once it took over). Then the closing
    # handshakes differ, and with them when each connection is over.
    websockets_closed_first = bool(failed_by_app) and kind(light.frames, Opcode.CLOSE) != kind(
        full.frames, Opcode.CLOSE
    )
    if websockets_closed_first:
        assert until_failure(light.calls) == until_failure(full.calls)
        assert light.ended
    else:
        assert first_failure(light.calls) == first_failure(full.calls)
        assert (light.ended, light.closed) == (full.ended, full.closed)

    # Data frames (the application's answers) in the same order. Pongs: the node answers the
    # last ping of each read, once, and only pings within the client's rates (RFC 6455 5.5.3
    # allows answering only the most recent ping); websockets answers every ping at once. So
    # the node's pongs are a subsequence of websockets', and an open connection whose pings
    # were all within its rates got the answer to its last ping.
    assert kind(light.frames, Opcode.TEXT) == kind(full.frames, Opcode.TEXT)
    light_pongs, full_pongs = kind(light.frames, Opcode.PONG), kind(full.frames, Opcode.PONG)
    remaining = iter(full_pongs)
    assert all(pong in remaining for pong in light_pongs), (light_pongs, full_pongs)
    refused = any(c == "rate_limited" for k, c in light.calls if k == "rejected")
    if not light.closed and full_pongs and not refused:
        assert light_pongs[-1:] == full_pongs[-1:]
    if failed_by_app:
        closes = kind(light.frames, Opcode.CLOSE)
        assert closes
        assert Close.parse(closes[0][2]).code == APP_CLOSES[failed_by_app[0]] or closes == kind(
            full.frames, Opcode.CLOSE
        )
    else:
        assert kind(light.frames, Opcode.CLOSE) == kind(full.frames, Opcode.CLOSE)
    # A partial frame the node holds is at most one frame under the limit and its header.
    assert light.max_inbuf <= MAX_FRAME + 14
    # websockets alone agrees on every close it decides (protocol errors, too big, a client's
    # close), when the application did not close first for a reason of its own.
    close_sent = websockets_alone(stream)
    rejected = [code for call, code in light.calls if call == "rejected"]
    if close_sent is not None and set(rejected) <= {"protocol_violation", "frame_too_big"}:
        payloads = [data for opcode, _, data in light.frames if opcode == Opcode.CLOSE]
        assert payloads, "websockets would have closed"
        assert Close.parse(payloads[0]).code == close_sent.code


async def test_pings_of_one_read_get_one_pong_for_the_last() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    assert client.conn.proto is None
    client.conn.data_received(b"".join(clean(Opcode.PING, b"p%d" % i) for i in range(50)))
    assert [(f.opcode, bytes(f.data)) for f in client.received()] == [(Opcode.PONG, b"p49")]
    client.conn.data_received(clean(Opcode.PING, b"next"))
    assert [(f.opcode, bytes(f.data)) for f in client.received()] == [(Opcode.PONG, b"next")]
    client.disconnect()


async def test_a_refused_ping_gets_no_pong() -> None:
    # The frame bucket holds 3: the fourth ping of the read is refused (rate_limited), so the
    # pong answers the third, the last one the client could afford.
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=3)))
    client.conn.data_received(b"".join(clean(Opcode.PING, b"p%d" % i) for i in range(4)))
    assert [(f.opcode, bytes(f.data)) for f in client.received()] == [(Opcode.PONG, b"p2")]
    assert app.rejected == ["rate_limited"]
    client.disconnect()


async def test_compressed_connection_keeps_websockets_protocol() -> None:
    # permessage-deflate frames carry RSV1 and need websockets' inflater: never dropped.
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(compression=True)), compress=True)
    assert client.conn._compressed and client.conn.proto is not None
    client.send_text("squeeze " * 40)
    client.proto.send_ping(b"hi")
    client.push()
    assert app.texts == ["squeeze " * 40]
    assert [(f.opcode, bytes(f.data)) for f in client.received()] == [(Opcode.PONG, b"hi")]
    assert client.conn.proto is not None
    client.proto.send_close(1000, "bye")
    client.push()
    assert client.close_code == 1000
    client.disconnect()
    assert app.calls[-1] == ("close", client.conn.id)


@pytest.mark.parametrize(("sent", "answer"), [(1000, 1000), (4321, 4321), (1005, 1002)])
async def test_client_close_is_answered_on_an_uncompressed_connection(
    sent: int, answer: int
) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    assert client.conn.proto is None
    payload = sent.to_bytes(2, "big") + b"bye"
    client.conn.data_received(clean(Opcode.PING, b"p") + clean(Opcode.CLOSE, payload))
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.PONG, Opcode.CLOSE]
    assert Close.parse(frames[1].data).code == answer
    # Refused by websockets' checks (1005) or not, the node half-closes: closing outright would
    # reset a client that still sends (a pong), and destroy what it had not read yet.
    assert client.transport.eof_written and not client.transport.closed
    # The rooms are left at once, not at the client's end of the stream.
    assert app.calls[-1] == ("close", client.conn.id)
    client.disconnect()
    assert app.calls[-1] == ("close", client.conn.id)


@dataclass(frozen=True)
class AfterClose:
    written: bytes  # everything the server wrote after the handshake, byte for byte
    eof_written: bool
    transport_closed: bool
    close_timer: bool
    answered_here: bool  # by the node's own parser, not websockets' protocol
    is_open: bool
    left_at_eof: bool  # the rooms left at the end of the client's stream, or once it is lost
    calls: list[tuple[str, str]]


async def close_outcome(read: bytes, settings: Settings, half_close: bool) -> AfterClose:
    """One read holding a client's close (and what surrounds it), then what a node does after
    it: a frame for the client, the node's own close, more input, the end of the stream."""
    app = RecordingApp()
    client = WsClient(make_server(app, settings))
    conn = client.conn
    client.transport.supports_eof = half_close
    assert conn.proto is None
    conn.data_received(read)
    timer = conn._close_timer is not None
    answered_here = conn.proto is None
    conn.send(b'{"type":"late"}')  # room traffic queued after the close: never written
    conn.close(1001, "going away")  # the node closing too (a drain): nothing more to send
    conn.data_received(clean(Opcode.TEXT, b'"ignored"'))
    await settle()
    is_open = conn._is_open()
    written = client.transport.take()
    keep_open = conn.eof_received()
    left_at_eof = conn.closed
    assert not keep_open
    conn.connection_lost(None)
    await settle()
    return AfterClose(
        written,
        client.transport.eof_written,
        client.transport.closed,
        timer,
        answered_here,
        is_open,
        left_at_eof,
        app.calls,
    )


CLOSE_READS = [
    clean(Opcode.CLOSE, b"\x03\xe8"),
    clean(Opcode.CLOSE, b""),  # no status: echoed empty
    clean(Opcode.CLOSE, b"\x0f\xa0" + "au revoir, à bientôt".encode()),
    clean(Opcode.CLOSE, b"\x03\xe8" + b"r" * 123),  # the largest control frame
    clean(Opcode.PING, b"p1") + clean(Opcode.PING, b"p2") + clean(Opcode.CLOSE, b"\x03\xe9"),
    clean(Opcode.TEXT, b'"hello"') + clean(Opcode.CLOSE, b"\x03\xe8") + clean(Opcode.TEXT, b"x"),
    clean(Opcode.CLOSE, b"\x03\xe8") + clean(Opcode.PING, b"after") + b"\x81",
    # Refused by websockets' checks: it answers them itself (1002, 1007).
    clean(Opcode.CLOSE, b"\x03"),
    clean(Opcode.CLOSE, b"\x03\xed"),  # 1005 may not be sent
    clean(Opcode.CLOSE, b"\x03\xe8\xff"),
    clean(Opcode.CLOSE, b"\x03\xe8" + b"r" * 124),  # a control frame over 125 bytes
    clean(Opcode.CLOSE, b"\x03\xe8", "16"),
]


@pytest.mark.parametrize("read", CLOSE_READS)
@pytest.mark.parametrize("tight", [False, True])
@pytest.mark.parametrize("half_close", [True, False])
async def test_a_client_close_without_websockets_protocol_is_answered_as_websockets_does(
    read: bytes, tight: bool, half_close: bool
) -> None:
    # TIGHT's frame budget is 5: a close in a read of more frames is refused by the limiter
    # (counted, and its rate_limited answer must not follow the close frame).
    settings = TIGHT if tight else ROOMY
    if tight:
        read = clean(Opcode.PING, b"spent") * 5 + read
    native = await close_outcome(read, settings, half_close)
    with pytest.MonkeyPatch.context() as patch:
        # The reference, as before: the node's parser hands the close to a websockets
        # protocol made at that frame's start (what it still does for a close websockets
        # refuses).
        patch.setattr(Connection, "_answer_close", lambda self, payload, pong: False)
        reference = await close_outcome(read, settings, half_close)

    # The same bytes written, the same end of the stream, the same rooms left at the same
    # point, the same calls.
    def without_timer(outcome: AfterClose) -> AfterClose:
        return replace(outcome, close_timer=False, answered_here=False)

    assert without_timer(native) == without_timer(reference)
    assert not native.is_open
    assert native.calls[-1][0] == "close"
    # The close frame is the last frame written, and the stream ends right after it.
    assert server_frames(b"HTTP/1.1 101 \r\n\r\n" + native.written)[-1][0] == Opcode.CLOSE
    if native.answered_here:
        # Both close frames passed: a half-close (the client may still send a pong to a ping
        # that crossed its close, and input arriving at a closed socket resets it), bounded by
        # the close timer.
        assert native.close_timer == half_close
    else:
        # Left to websockets' protocol (a close it refuses, a 16-bit length): as it answers.
        assert native == reference
    # Half-closed whenever the transport can, answered or refused.
    assert native.eof_written == half_close
    assert native.transport_closed == (not half_close)
