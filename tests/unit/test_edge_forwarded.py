"""The client address behind trusted proxies (edge/forwarded.py): the rightmost
address of the forwarding chain that is not a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest

from edge.forwarded import client_address, forwarded_for, parse_address, x_forwarded_for

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ff::/48")]


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        # No header, or a peer that is not a proxy: the peer, whatever the header says.
        ("10.1.2.3", [], "10.1.2.3"),
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),
        # A trusted proxy's header is believed...
        ("10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        # ...but only the part the trusted proxies wrote: the client's own entries are to the left.
        ("10.1.2.3", ["1.1.1.1, 203.0.113.9"], "203.0.113.9"),
        ("10.1.2.3", ["1.1.1.1, 203.0.113.9, 10.9.9.9"], "203.0.113.9"),
        # Several header lines are one list, in order.
        ("10.1.2.3", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),
        # Ports and brackets, IPv6.
        ("10.1.2.3", ["203.0.113.9:4711"], "203.0.113.9"),
        ("2001:db8:ff::1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("::ffff:10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        # Garbage where the client's address should be: the proxy that wrote it.
        ("10.1.2.3", ["not-an-address"], "10.1.2.3"),
        ("10.1.2.3", ["203.0.113.9, 10.2.2.2, garbage"], "10.1.2.3"),
        # Every hop a trusted proxy: the farthest one.
        ("10.1.2.3", ["10.5.5.5"], "10.5.5.5"),
    ],
)
def test_x_forwarded_for_is_read_from_the_right(peer: str, header: list[str], expected: str) -> None:
    assert client_address(peer, x_forwarded_for(header), PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", x_forwarded_for(["203.0.113.9"]), []) == "127.0.0.1"


def test_rfc_7239_forwarded() -> None:
    header = ['for=1.1.1.1;proto=https, For="[2001:db8::5]:4711";by=10.0.0.1', "for=10.7.7.7"]
    assert forwarded_for(header) == ["1.1.1.1", '"[2001:db8::5]:4711"', "10.7.7.7"]
    assert client_address("10.1.2.3", forwarded_for(header), PROXIES) == "2001:db8::5"
    # An element without for= (or for=unknown, an obfuscated _name) is no address.
    assert forwarded_for(["proto=https"]) == ["unknown"]
    assert client_address("10.1.2.3", forwarded_for(["for=_hidden"]), PROXIES) == "10.1.2.3"


@pytest.mark.parametrize("text", ["unknown", "_gazonk", "", "1.2.3", "[::1", "300.1.1.1"])
def test_what_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None
