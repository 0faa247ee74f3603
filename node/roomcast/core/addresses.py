"""Which client an address stands for, when limits count clients by address. No I/O.

An IPv6 client is not one address but a /64: SLAAC privacy addresses let any host take a new
one at will, and every subscriber line or cloud VM is given at least a /64. Counted per full
address, one host rotating its interface identifier got a fresh bucket per handshake and the
per-address limits never bit. An IPv4 client may also be written as an IPv4-mapped IPv6
address (``::ffff:198.51.100.7``) by a dual-stack proxy or socket: the same client, one key.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Final

# The prefix an IPv6 client is given at the least (RFC 6177, RFC 7421).
IPV6_CLIENT_PREFIX: Final = 64


# A connection's key is asked for at its handshake, open, close and first join: parsed once per
# address (a handful of microseconds each), however many times it is asked. Bounded, so that
# addresses that never come back cannot grow it.
@functools.lru_cache(maxsize=4096)
def limit_key(address: str) -> str:
    """The key a client address's limits are counted under: an IPv4 address itself (also when
    written IPv4-mapped), an IPv6 address's /64; anything else (not an address) unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    network = ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False)
    return str(network)
