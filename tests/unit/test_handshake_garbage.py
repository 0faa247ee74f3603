"""A handshake leaves no cyclic garbage behind: websockets' protocol object, let go once the
connection is open, is freed by its reference count, not by a collector pass (a pass over each
handshake's protocol cost ~30 µs of a handshake; see roomcast.net.handshake.let_go)."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.wsharness import RecordingApp, WsClient, make_server


@pytest.fixture
def collector_saving_garbage() -> Iterator[None]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.usefixtures("collector_saving_garbage")
async def test_an_open_connection_leaves_no_cyclic_garbage() -> None:
    server = make_server(RecordingApp())
    clients = [WsClient(server) for _ in range(20)]
    assert all(c.response.status_code == 101 and c.conn.proto is None for c in clients)
    gc.collect()
    kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    assert not kinds, f"cyclic garbage per 20 handshakes: {kinds.most_common(5)}"
