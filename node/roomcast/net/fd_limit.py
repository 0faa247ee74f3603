"""How many WebSockets one node holds: its open-files limit less a reserve for everything else.

Every connection is a file descriptor, and so is each Redis connection, hook call, metrics
scrape and HTTP API request. A node that let clients take the last descriptors could no longer
reconnect to Redis; and once ``accept()`` fails with EMFILE, libuv accepts and closes the
waiting sockets at once (its "EMFILE trick", so the loop does not spin), which clients only see
as a dropped connection. Below the limit computed here the node refuses a handshake with
``503`` and ``Retry-After`` instead, counts it, and logs why.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

log = logging.getLogger("roomcast.fd_limit")

# Descriptors kept for Redis, hooks, the internal port, HTTP API requests and handshakes in
# flight: at most this many, at most a quarter of a small limit.
FD_RESERVE: Final = 128
# Descriptors no client socket may take, whatever its kind (WebSocket, handshake in flight, HTTP
# request, event stream): Redis connections, hook calls, the internal port. At most an eighth of
# a small limit.
SOCKET_RESERVE: Final = 32
# What a refused client is told to wait before trying again (or trying another node).
RETRY_AFTER_SECONDS: Final = 5
# The answer to a socket accepted past socket_limit, written before anything is read: a client
# (or nginx) gets a status and Retry-After, never a dropped connection.
_FULL_BODY: Final = b"node full: try again later or another node\n"
FULL_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (RETRY_AFTER_SECONDS, len(_FULL_BODY), _FULL_BODY)
)
# No limit at all still needs a number.
_UNLIMITED: Final = 1 << 30


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (what the process may do unprivileged; a
    shell's soft limit is often 1,024); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit", extra={"error": str(exc)})
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _UNLIMITED if soft == resource.RLIM_INFINITY else int(soft)


def connection_limit(configured: int, open_files: int) -> int:
    """``configured`` (ROOMCAST_MAX_CONNECTIONS) or, when 0, ``open_files`` less the reserve."""
    if configured > 0:
        return configured
    return max(1, open_files - min(FD_RESERVE, open_files // 4))


def socket_limit(open_files: int, max_connections: int) -> int:
    """Client sockets of every kind the node holds at once: its open-files limit less
    :data:`SOCKET_RESERVE`. WebSockets alone stop earlier (:func:`connection_limit`); HTTP
    requests, event streams and handshakes in flight were counted nowhere, and 21,000
    unfinished requests from 100 addresses took the node's last descriptors (new clients were
    reset). A ``max_connections`` set above it is kept: the operator asked for that many."""
    return max(1, open_files - min(SOCKET_RESERVE, open_files // 8), max_connections)
