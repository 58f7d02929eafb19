"""Who a request comes from: the peer, or behind a trusted reverse proxy the client it names.

Behind Caddy every connection comes from Caddy, so the peer alone would put every client under
one claim rate limit and one audit name. X-Forwarded-For is believed only from a peer in
PAKU_TRUSTED_PROXIES: a client can write anything in that header, so from anyone else it is
ignored. uvicorn's own handling of the header is off (cli/runner.py), so this setting is the
only one that decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.requests import Request

from paku_iot.settings import IPNetwork

FORWARDED_FOR = "x-forwarded-for"
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: _Address | None, trusted: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str:
    """The client's address. From a trusted peer, X-Forwarded-For is read right to left (each
    proxy appends the address it was connected from) and the first hop that is not itself a
    trusted proxy is the client; anything left of it was written by that client and is not
    believed. A hop that is not an IP address stops the walk at the last trusted one."""
    if peer is None:
        return "unknown"
    if not _trusted(_address(peer), trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client


def request_client_address(request: Request, trusted: Sequence[IPNetwork]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist(FORWARDED_FOR), trusted)
