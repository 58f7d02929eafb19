"""Which address X-Forwarded-For yields, hop by hop (the claim route's tests show it end to
end)."""

from __future__ import annotations

import ipaddress

from paku_iot.web.client_address import client_address

PROXIES = (ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_network("fd00::/8"))


def test_the_header_counts_only_from_a_trusted_peer() -> None:
    assert client_address("10.9.0.2", ["203.0.113.7"], PROXIES) == "203.0.113.7"
    assert client_address("198.51.100.1", ["203.0.113.7"], PROXIES) == "198.51.100.1"
    assert client_address("10.9.0.2", ["203.0.113.7"], ()) == "10.9.0.2"
    assert client_address("10.9.0.2", [], PROXIES) == "10.9.0.2"
    assert client_address(None, ["203.0.113.7"], PROXIES) == "unknown"


def test_the_first_untrusted_hop_from_the_right_is_the_client() -> None:
    # The client wrote the first entry itself; two proxies of ours appended the rest.
    chain = ["198.51.100.1, 203.0.113.7", "10.9.0.5"]
    assert client_address("10.9.0.2", chain, PROXIES) == "203.0.113.7"
    assert client_address("fd00::2", ["2001:DB8::1"], PROXIES) == "2001:db8::1"


def test_a_hop_that_is_not_an_address_is_not_believed() -> None:
    assert client_address("10.9.0.2", ["203.0.113.7, junk"], PROXIES) == "10.9.0.2"
    assert client_address("10.9.0.2", ["junk, 10.9.0.5"], PROXIES) == "10.9.0.5"
