"""Which client an address stands for: an IPv6 host is its /64, an IPv4 host is itself however
it is written."""

from __future__ import annotations

import pytest

from roomcast.core.addresses import limit_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("::ffff:c633:6407", "198.51.100.7"),
        ("2001:db8:7:1::1", "2001:db8:7:1::/64"),
        ("2001:db8:7:1:dead:beef:1:2", "2001:db8:7:1::/64"),
        ("2001:DB8:7:1::1", "2001:db8:7:1::/64"),
        ("::1", "::/64"),
        ("not an address", "not an address"),
    ],
)
def test_limit_key(address: str, key: str) -> None:
    assert limit_key(address) == key


def test_two_ipv6_prefixes_are_two_clients() -> None:
    assert limit_key("2001:db8:7:1::1") != limit_key("2001:db8:7:2::1")
