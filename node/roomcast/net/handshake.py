"""What a WebSocket handshake must look like before anything else reads it. No I/O.

Headers that decide who a client is or where it comes from must be unambiguous: a request with
two ``Origin`` (or ``Host``, ``Authorization``, ``X-Forwarded-For``…) headers, or two tokens, is
refused with a clean 400 instead of letting one reader pick the first and another the last.

A handshake is most of what a connection setup costs the node, and reconnect storms are made of
them, so this is also where websockets' handshake is made cheaper without changing what it
accepts or answers (:class:`HandshakeProtocol`).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import time
from collections.abc import Generator
from typing import Final
from urllib.parse import parse_qsl

from websockets import http11
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, Protocol
from websockets.server import ServerProtocol
from websockets.typing import Origin
from websockets.utils import accept_key

from roomcast.core.auth import TOKEN_QUERY_PARAMETER, TOKEN_SUBPROTOCOL_PREFIX, AuthError
from roomcast.net.wsprotocol import PingLeavingProtocol
from roomcast.wire.codes import ErrorCode

# Each may appear at most once (RFC 9110 §5.3: only list-valued fields may repeat).
SINGLE_HEADERS: Final = (
    "Host",
    "Origin",
    "Authorization",
    "X-Forwarded-For",
    "X-API-Key",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Upgrade",
)
# More subprotocols than any real client offers (a browser offers two: roomcast + its token).
MAX_SUBPROTOCOLS: Final = 8
MAX_ORIGIN_LENGTH: Final = 256
# "null" (sandboxed documents, file: pages) or scheme://host[:port], as browsers send it.
_ORIGIN: Final = re.compile(r"null|[A-Za-z][A-Za-z0-9+.\-]*://[A-Za-z0-9.\-\[\]:_]+")


def malformed(code: ErrorCode, reason: str) -> AuthError:
    return AuthError(400, code, reason)


def single_header(headers: Headers, name: str) -> str | None:
    """The value of a header that appears at most once (check_request made sure), or None.

    ``headers.get`` would raise and catch a KeyError for every absent header (Mapping.get)."""
    values = headers.get_all(name)
    return values[0] if values else None


def check_request(path: str, headers: Headers) -> list[str]:
    """Refuse ambiguous or malformed security headers; return the offered subprotocols."""
    # Fewer distinct names than header lines: some header repeats, find out whether it matters.
    if len(headers) != sum(1 for _ in headers.raw_items()):
        for name in SINGLE_HEADERS:
            if len(headers.get_all(name)) > 1:
                raise malformed(ErrorCode.DUPLICATE_HEADER, f"more than one {name} header")
    origin = single_header(headers, "Origin")
    if origin is not None and (
        len(origin) > MAX_ORIGIN_LENGTH or _ORIGIN.fullmatch(origin.strip()) is None
    ):
        raise malformed(ErrorCode.MALFORMED_HEADER, "Origin is not scheme://host[:port] or null")
    offered = [
        entry.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for entry in value.split(",")
        if entry.strip()
    ]
    if len(offered) > MAX_SUBPROTOCOLS:
        raise malformed(
            ErrorCode.MALFORMED_HEADER, f"more than {MAX_SUBPROTOCOLS} subprotocols offered"
        )
    tokens = sum(1 for entry in offered if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX))
    _, _, query = path.partition("?")
    if query:
        try:
            fields = parse_qsl(query, keep_blank_values=True, max_num_fields=16)
        except ValueError:
            raise malformed(ErrorCode.MALFORMED_QUERY, "too many query parameters") from None
        tokens += sum(1 for key, _ in fields if key == TOKEN_QUERY_PARAMETER)
    if tokens > 1:
        raise malformed(
            ErrorCode.DUPLICATE_TOKEN, "more than one token (query and/or subprotocols)"
        )
    return offered


class _HttpDate:
    """The Date header of responses, formatted once a second instead of once a response."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._text = email.utils.formatdate(now, usegmt=True)
            self._second = second
        return self._text


http_date: Final = _HttpDate()

# A handshake's whole head (request line and headers), counted as it arrives, before websockets
# parses more of it: websockets bounds each line (8 KiB) and their count (128), not their total,
# and parsed a head of 100 lines of 8 KB (~800 KB) in ~7.8 ms of the node's one thread, ~13
# times an ordinary handshake (tests/adversarial/test_redteam17_handshake_heads.py). Above
# what nginx forwards: its first 1 KiB buffer (client_header_buffer_size) keeps the lines it
# completed, then come large_client_header_buffers' 4 x 8 KiB, so it took client heads of up
# to 33,770 bytes and adds its X-Forwarded-* lines; at 32 KiB the node answered those 431
# (tests/adversarial/test_breakrt17_nginx_heads.py). A token of ~8 KB in the query or a
# subprotocol and a browser's cookies fit either way.
MAX_HEAD_BYTES: Final = 34 * 1024

# A request this long or with this many header lines is left to websockets' own parser, which
# enforces its limits (MAX_LINE_LENGTH per line, MAX_NUM_HEADERS) with its own answers.
_LEAN_MAX_BYTES: Final = min(4096, http11.MAX_LINE_LENGTH)
_LEAN_MAX_HEADERS: Final = min(64, http11.MAX_NUM_HEADERS)
_TOKEN: Final = re.compile(rb"[-!#$%&\'*+.^_`|~0-9a-zA-Z]+")  # websockets' http11._token_re
_VALUE: Final = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")  # websockets' http11._value_re


def lean_request(buffer: bytes | bytearray) -> tuple[Request, int] | None:
    """The request websockets' ``Request.parse`` would return for ``buffer`` and its length, or
    None for anything that is not a whole, plain request (websockets then parses it itself).

    The same checks on the same bytes (request line, header names and values, no body), done on
    the whole request at once instead of a generator per line: the request parser was a quarter
    of a handshake's Python time. Whatever websockets would refuse or limit comes back None, so
    every refusal keeps websockets' own answer."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0 or end + 4 > _LEAN_MAX_BYTES:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    if len(lines) - 1 > _LEAN_MAX_HEADERS:
        return None
    request_line = lines[0]
    parts = request_line.split(b" ", 2)
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or b"\n" in request_line:
        return None
    try:
        method = parts[0].decode("ascii")
        path = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    headers = Headers.__new__(Headers)
    headers.clear()
    token = _TOKEN.fullmatch
    value_ok = _VALUE.fullmatch
    for line in lines[1:]:
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or token(raw_name) is None:
            return None
        raw_value = raw_value.strip(b" \t")
        if value_ok(raw_value) is None:  # also refuses a CR or LF inside a line
            return None
        headers.set_insecure(raw_name.decode("ascii"), raw_value.decode("iso-8859-1"))
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return None
    return Request(path, headers, method, parts[2].decode("ascii")), end + 4


def let_go(protocol: ServerProtocol) -> None:
    """Break the two reference cycles of a websockets protocol the node no longer uses: its
    parser (a suspended generator that refers to it) and its bound ``select_subprotocol``. It
    is then freed at once by its reference count instead of as cyclic garbage by a collector
    pass: those passes took ~30 µs of a handshake (setup_instructions.py, threshold 20,000)
    when every handshake's protocol went to them."""
    protocol.parser.close()
    vars(protocol).pop("select_subprotocol", None)


class HandshakeProtocol(PingLeavingProtocol):
    """websockets' ServerProtocol with a cheaper 101 answer: the same checks
    (``process_request``), the same headers in the same order, but the Date formatted once a
    second and the values roomcast or websockets computed themselves not validated again. Any
    request the checks refuse gets websockets' own answer (``ServerProtocol.accept``)."""

    def parse(self) -> Generator[None]:
        """websockets' parser, but a whole, plain request in the first data is read by
        :func:`lean_request`; anything else goes through websockets' own request parser."""
        if self.state is CONNECTING and not self.debug:
            reader = self.reader
            while not reader.buffer and not reader.eof:
                yield
            parsed = lean_request(reader.buffer)
            if parsed is not None:
                request, length = parsed
                del reader.buffer[:length]
                self.events.append(request)
                # What ServerProtocol.parse does after the request: frames (none before a 101).
                yield from Protocol.parse(self)
                return
        yield from super().parse()

    def process_request(self, request: Request) -> tuple[str, str | None, str | None]:
        """websockets' checks, with the usual request's headers read without their grammar:
        ``Connection: Upgrade`` and ``Upgrade: websocket`` alone (any case), one key and
        version 13. Anything else, valid or not, goes through websockets' own checks."""
        headers = request.headers
        connection = headers.get_all("Connection")
        upgrade = headers.get_all("Upgrade")
        key = headers.get_all("Sec-WebSocket-Key")
        if (
            request.method != "GET"
            or request.protocol != "HTTP/1.1"
            or len(connection) != 1
            or connection[0].lower() != "upgrade"
            or len(upgrade) != 1
            or upgrade[0].lower() != "websocket"
            or len(key) != 1
            or headers.get_all("Sec-WebSocket-Version") != ["13"]
        ):
            return super().process_request(request)
        try:
            raw_key = base64.b64decode(key[0].encode(), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raw_key = b""
        if len(raw_key) != 16:
            return super().process_request(request)  # refuses it, as websockets does
        accept_header = accept_key(key[0])
        origin = headers.get_all("Origin")
        if self.origins is None and len(origin) < 2:
            # process_origin's answer, without the KeyError its headers.get("Origin") raises
            # and catches when there is none (every non-browser client): ~2 µs a handshake.
            self.origin = Origin(origin[0]) if origin else None
        else:
            self.origin = self.process_origin(headers)  # its checks and its refusals
        extensions_header, self.extensions = self.process_extensions(headers)
        protocol_header = self.subprotocol = self.process_subprotocol(headers)
        return accept_header, extensions_header, protocol_header

    def accept(self, request: Request) -> Response:
        try:
            accept_header, extensions_header, protocol_header = self.process_request(request)
        except Exception:
            # websockets runs the checks again and answers the refusal its own way.
            return super().accept(request)
        self.accept_called = True
        # Headers() goes through MutableMapping.update; clear() sets up the same empty state.
        headers = Headers.__new__(Headers)
        headers.clear()
        headers.set_insecure("Date", http_date())
        headers.set_insecure("Upgrade", "websocket")
        headers.set_insecure("Connection", "Upgrade")
        headers.set_insecure("Sec-WebSocket-Accept", accept_header)  # base64 of a digest
        if extensions_header is not None:
            headers.set_insecure("Sec-WebSocket-Extensions", extensions_header)  # websockets'
        if protocol_header is not None:
            # One of the client's offers (parsed as a token): checked like any header value.
            headers["Sec-WebSocket-Protocol"] = protocol_header
        return Response(101, "Switching Protocols", headers)
