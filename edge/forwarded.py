"""The client's address behind trusted proxies (``X-Forwarded-For`` or RFC 7239 ``Forwarded``).

Each proxy appends the address it received the request from, so only the
entries written by proxies the edge trusts can be believed: walking the chain
from the right (the TCP peer first), the client is the first address that is
not a trusted proxy.  Whatever a client writes itself sits to the left of that
and is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: ``192.0.2.1``, ``192.0.2.1:4711``,
    ``2001:db8::1``, ``[2001:db8::1]:4711`` or quoted (``Forwarded``); None for
    anything else (``unknown``, an obfuscated ``_name``, garbage)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text, closed, _ = text[1:].partition("]")
        if not closed:
            return None
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The chain of ``X-Forwarded-For`` (header lines in order), left to right."""
    return [item for value in values for item in value.split(",")]


def forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` of each element of RFC 7239 ``Forwarded`` headers, left to right
    (an element without one counts as an unknown hop)."""
    chain = []
    for value in values:
        for element in value.split(","):
            node = "unknown"
            for pair in element.split(";"):
                name, _, given = pair.partition("=")
                if name.strip().lower() == "for":
                    node = given
            chain.append(node)
    return chain


def client_address(peer: str, chain: Sequence[str], trusted: Sequence[Network]) -> str:
    """The rightmost address of ``chain`` + ``peer`` that is not a trusted proxy.
    Without trusted proxies (or from an untrusted peer) that is the peer.  An entry
    that is no address ends the walk at the proxy that wrote it, and a chain of
    trusted proxies only ends at its leftmost one."""
    believed = peer
    for hop in [peer, *reversed(chain)]:
        address = parse_address(hop)
        if address is None:
            return believed
        believed = str(address)
        if not any(address in network for network in trusted):
            return believed
    return believed
