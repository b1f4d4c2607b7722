"""The client's address behind a trusted load balancer: `X-Forwarded-For`, believed only from a proxy we trust.

Behind a balancer every connection's socket peer is the balancer, so the per-address rate limits
(`hub.ratelimit.rate_key`) would put all anonymous callers in one bucket. Yet a header any client can
write must not choose its bucket either. So the header counts only when the socket peer is in
`Settings.trusted_proxies`, and only its entries appended by trusted proxies are believed. The
servers' own proxy-header support differs by backend (uvicorn trusts loopback by default, hypercorn
has none); the runner turns it off, and this middleware does the same on both.
"""

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

Network = IPv4Network | IPv6Network

HEADER: Final = b"x-forwarded-for"


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    """The address `text` names (an IPv4-mapped IPv6 address as its IPv4 one), or None when malformed."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, networks: Sequence[Network]) -> str:
    """The address of the client behind a connection from `peer` that carries `forwarded_for`.

    Each proxy appends the address it received the request from, so the list is read from the
    right: entries that are trusted proxies are passed over, and the first one that is not is the
    client. Everything left of it was written by that client and is ignored (it may be spoofed). If
    every entry is trusted, the leftmost is the client. The socket peer stays the client when it is
    not trusted itself, when there is no header, or when an entry the walk reaches is not an IP address.
    """
    peer_address = _parse(peer)
    if forwarded_for is None or peer_address is None or not _trusted(peer_address, networks):
        return peer
    client = peer_address
    for entry in reversed(forwarded_for.split(",")):
        address = _parse(entry)
        if address is None:
            return peer
        client = address
        if not _trusted(address, networks):
            break
    return str(client)


class TrustedProxies:
    """ASGI middleware: on `http` and `websocket` scopes from a trusted proxy, `scope["client"]` becomes
    the client that `X-Forwarded-For` names (port 0: the header carries none)."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            values = [value.decode("latin-1") for name, value in scope["headers"] if name == HEADER]
            # several X-Forwarded-For fields are one comma-separated list, in order (RFC 9110 §5.3)
            address = client_address(client[0], ",".join(values) if values else None, self.networks)
            if address != client[0]:
                scope = {**scope, "client": (address, 0)}
        await self.app(scope, receive, send)
