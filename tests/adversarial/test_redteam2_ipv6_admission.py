"""Red team 2: the per-address handshake admission (429 + Retry-After) counts an IPv6 client by
its full 128-bit address, and one IPv6 client owns a whole /64 (SLAAC privacy addresses: any
host picks a new one at will, and every subscriber line or cloud VM is given at least a /64).

docs/security.md: "one address flooding handshakes ... Checked first, it refuses that address
on its own". An attacker on one /64 writes a fresh source address per handshake: each gets a
fresh bucket, so the limit never bites and the flood again takes the node-wide rate, pushing
every other client's Retry-After up (what the per-address check was built to stop).

The node is reached as nginx reaches it: from a trusted proxy (127.0.0.1, the default), with the
client's address in `X-Forwarded-For` (`proxy_set_header X-Forwarded-For $remote_addr`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.rawws import handshake_request, open_socket, read_head

PER_ADDRESS_RATE, PER_ADDRESS_BURST = 2, 8
FLOOD = 40  # five times the address's burst
# The node-wide rate stays well above the flood: only the per-address check may refuse here.
ENV = {
    "ROOMCAST_ADMISSION_RATE_PER_SECOND": "1000",
    "ROOMCAST_ADMISSION_BURST": "1000",
    "ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND": str(PER_ADDRESS_RATE),
    "ROOMCAST_ADMISSION_PER_ADDRESS_BURST": str(PER_ADDRESS_BURST),
}


@pytest.fixture
def node() -> Iterator[Any]:
    with LocalCluster(1, redis=False, nginx=False, node_env=ENV) as running:
        yield running.nodes[0]


async def handshake_as(port: int, client_address: str) -> int:
    """One upgrade as nginx forwards it for ``client_address``: the answer's status."""
    reader, writer = await open_socket("127.0.0.1", port)
    try:
        writer.write(
            handshake_request("127.0.0.1", port, headers=[("X-Forwarded-For", client_address)])
        )
        status, _ = await read_head(reader)
        return status
    finally:
        writer.close()


def accepted_within(statuses: list[int], elapsed: float) -> bool:
    return statuses.count(101) <= PER_ADDRESS_BURST + PER_ADDRESS_RATE * elapsed + 1


async def test_one_ipv6_slash64_cannot_rotate_addresses_past_the_handshake_limit(
    node: Any,
) -> None:
    started = time.monotonic()
    # One host's /64, a new interface identifier per handshake.
    statuses = [await handshake_as(node.port, f"2001:db8:7:1::{i + 1:x}") for i in range(FLOOD)]
    elapsed = time.monotonic() - started
    # Someone else, on another /64, is not punished for it.
    neighbour = await handshake_as(node.port, "2001:db8:7:2::1")
    figures = (
        f"{FLOOD} handshakes in {elapsed:.2f} s from one /64, each from its own address: "
        f"{statuses.count(101)} accepted, {statuses.count(429)} refused 429 (the limit allows "
        f"{PER_ADDRESS_BURST} + {PER_ADDRESS_RATE}/s); another /64 then got {neighbour}"
    )
    print(figures)
    assert accepted_within(statuses, elapsed), figures
    assert set(statuses) == {101, 429}, figures
    assert neighbour == 101, figures


async def test_ipv4_written_as_ipv4_mapped_ipv6_shares_the_ipv4_bucket(node: Any) -> None:
    """A dual-stack proxy may name the same IPv4 client `198.51.100.7` or `::ffff:198.51.100.7`:
    one client, one bucket, whichever spelling comes."""
    started = time.monotonic()
    spellings = ("198.51.100.7", "::ffff:198.51.100.7", "::ffff:c633:6407")
    statuses = [await handshake_as(node.port, spellings[i % 3]) for i in range(FLOOD)]
    elapsed = time.monotonic() - started
    figures = (
        f"{FLOOD} handshakes in {elapsed:.2f} s from one IPv4 client under 3 spellings: "
        f"{statuses.count(101)} accepted (the limit allows {PER_ADDRESS_BURST} + "
        f"{PER_ADDRESS_RATE}/s)"
    )
    print(figures)
    assert accepted_within(statuses, elapsed), figures
