"""The claim rate limit counts clients, not the reverse proxy in front, and holds across API
processes: X-Forwarded-For is believed from PAKU_TRUSTED_PROXIES only, and the failures are
counted in the database."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from paku_iot.server.service import Role, Service, running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.security.test_claims_audit_tokens import issue
from tests.support.served import Served

CADDY = "10.9.0.2"  # the proxy's address on its network
WRONG = {"claimCode": "WRONG-CODE"}


@asynccontextmanager
async def api_process(settings: Settings, **changes: Any) -> AsyncIterator[Service]:
    """Another API service on the same database and broker, as a second replica (or the
    one behind the proxy) would be."""
    own = settings.model_copy(update={"instance_id": f"api-{secrets.token_hex(4)}", **changes})
    async with running_service(own, frozenset({Role.API})) as service:
        yield service


def client_of(service: Service, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service), client=(peer, 40000)),
        base_url="http://paku.test",
    )


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit_and_audit_name(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    [code] = await issue(api, ids=["proxied-1"])
    trusted = (ipaddress.ip_network("10.9.0.0/24"),)
    async with (
        api_process(settings, trusted_proxies=trusted) as behind_caddy,
        client_of(behind_caddy, CADDY) as caddy,
    ):
        for _ in range(10):
            refused = await caddy.post("/claim", json=WRONG, headers=forwarded("203.0.113.7"))
            assert refused.status_code == 403
        limited = await caddy.post(
            "/claim", json={"claimCode": code["claimCode"]}, headers=forwarded("203.0.113.7")
        )
        assert limited.status_code == 429
        # What the limited client writes in the header itself is not believed: Caddy's
        # address for it is the last (rightmost) one.
        spoofed = await caddy.post(
            "/claim",
            json={"claimCode": code["claimCode"]},
            headers=forwarded("198.51.100.1, 203.0.113.7"),
        )
        assert spoofed.status_code == 429
        # Another client through the same proxy is not locked out.
        claimed = await caddy.post(
            "/claim", json={"claimCode": code["claimCode"]}, headers=forwarded("203.0.113.8")
        )
        assert claimed.status_code == 200, claimed.text
    trail = (await api.get("/audit", params={"target": "proxied-1"})).json()["items"]
    assert [(e["action"], e["actor"]) for e in trail] == [("device.claim", "claim:203.0.113.8")]


async def test_an_untrusted_peers_forwarded_for_is_ignored(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    [code] = await issue(api, ids=["proxied-2"])
    trusted = (ipaddress.ip_network("10.9.0.0/24"),)
    async with (
        api_process(settings, trusted_proxies=trusted) as service,
        client_of(service, "10.0.3.1") as attacker,
        client_of(service, "10.0.3.2") as other,
    ):
        for i in range(10):
            refused = await attacker.post(
                "/claim", json=WRONG, headers=forwarded(f"198.51.100.{i}")
            )
            assert refused.status_code == 403
        # A fresh address in the header does not make a fresh client.
        limited = await attacker.post(
            "/claim", json={"claimCode": code["claimCode"]}, headers=forwarded("192.0.2.99")
        )
        assert limited.status_code == 429
        claimed = await other.post(
            "/claim", json={"claimCode": code["claimCode"]}, headers=forwarded(CADDY)
        )
        assert claimed.status_code == 200, claimed.text
    trail = (await api.get("/audit", params={"target": "proxied-2"})).json()["items"]
    assert [e["actor"] for e in trail] == ["claim:10.0.3.2"]


def test_the_served_api_ignores_forwarded_for_without_trusted_proxies(served: Served) -> None:
    """The real server (uvicorn): no address is trusted by default, not even loopback, so a
    client next to it cannot pick a new address for each guess either."""
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        for i in range(10):
            refused = client.post("/claim", json=WRONG, headers=forwarded(f"198.51.100.{i}"))
            assert refused.status_code == 403, refused.text
        limited = client.post("/claim", json=WRONG, headers=forwarded("192.0.2.99"))
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1


async def test_two_api_processes_share_the_limit(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    [code] = await issue(api, ids=["replicas-1"])
    async with (
        api_process(settings) as first,
        api_process(settings) as second,
        client_of(first, "10.0.4.1") as via_first,
        client_of(second, "10.0.4.1") as via_second,
    ):
        for _ in range(5):
            assert (await via_first.post("/claim", json=WRONG)).status_code == 403
            assert (await via_second.post("/claim", json=WRONG)).status_code == 403
        good = {"claimCode": code["claimCode"]}
        assert (await via_first.post("/claim", json=good)).status_code == 429
        assert (await via_second.post("/claim", json=good)).status_code == 429
