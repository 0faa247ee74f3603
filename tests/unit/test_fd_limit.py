"""How many WebSockets a node holds, from its open-files limit."""

from __future__ import annotations

import resource

from roomcast.net.fd_limit import (
    FD_RESERVE,
    FULL_RESPONSE,
    SOCKET_RESERVE,
    connection_limit,
    raise_open_files_limit,
    socket_limit,
)


def test_the_limit_less_a_reserve_unless_configured() -> None:
    assert connection_limit(0, 20_000) == 20_000 - FD_RESERVE
    assert connection_limit(0, 1_048_576) == 1_048_576 - FD_RESERVE
    assert connection_limit(0, 300) == 300 - 300 // 4  # a quarter of a small limit
    assert connection_limit(0, 1) == 1
    assert connection_limit(500, 20_000) == 500  # ROOMCAST_MAX_CONNECTIONS wins


def test_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        now = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert hard in (now, resource.RLIM_INFINITY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sockets_of_every_kind_stop_short_of_the_descriptors_the_node_needs() -> None:
    assert socket_limit(20_000, connection_limit(0, 20_000)) == 20_000 - SOCKET_RESERVE
    assert socket_limit(64, connection_limit(0, 64)) == 56  # an eighth of a small limit
    assert socket_limit(20_000, 100_000) == 100_000  # an operator's explicit cap is kept


def test_the_full_answer_is_a_complete_http_response() -> None:
    head, body = FULL_RESPONSE.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: 5" in head
    assert f"Content-Length: {len(body)}".encode() in head
