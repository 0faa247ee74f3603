"""websockets' server protocol, leaving pings to the connection. No I/O.

websockets answers every ping it parses with a pong of its own, before the node sees the frame:
a ping the node refuses (over the client's frame rate) was answered all the same, and a read
full of pings cost a pong each. The node's own frame parser answers once per read, for the last
ping the client could afford (RFC 6455 5.5.3 allows answering only the most recent); connections
websockets parses (compressed ones, and any that sent a fragment, a 64-bit length, ...) get the
same from this subclass: the ping is only handed over as an event, and
``roomcast.net.transport`` sends the one pong.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol


class PingLeavingProtocol(ServerProtocol):
    # The payload of the last ping of the read being parsed (the transport clears it after
    # each read): a close in the same read, the client's or ours (a protocol error), answers
    # it first, as RFC 6455 5.5.2 wants a pong for a ping received before the close, and
    # nothing may follow the close frame.
    last_ping: bytes | None = None

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.last_ping = bytes(frame.data)
            self.events.append(frame)  # what the base class does after its pong
            return
        if frame.opcode is Opcode.CLOSE:
            self._answer_last_ping()
        super().recv_frame(frame)

    def fail(self, code: int, reason: str = "") -> None:
        self._answer_last_ping()
        super().fail(code, reason)

    def _answer_last_ping(self) -> None:
        # At most once per connection: it closes now.
        if self.last_ping is not None and self.state is OPEN:
            self.send_pong(self.last_ping)
        self.last_ping = None
