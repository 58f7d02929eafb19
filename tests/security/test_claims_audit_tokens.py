"""Claim codes, the audit log and named admin tokens, through the API with real devices."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from tests.support.broker import Broker
from tests.support.mqtt import ConnectRefused


async def issue(api: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/claim-codes", json={"model": "lamp", **body})
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def anonymous(service: Service, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service), client=(address, 5000)),
        base_url="http://paku.test",
    )


async def test_a_claim_gives_credentials_once_and_the_device_connects(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    [code] = await issue(api, ids=["factory-1"])
    assert len(code["claimCode"].replace("-", "")) == 24  # 120 bits
    unclaimed = (await api.get("/devices/factory-1")).json()
    assert unclaimed["model"] == "lamp"
    with_nothing = broker.device("factory-1", "any-password")
    try:
        await with_nothing.connect()
        raise AssertionError("an unclaimed device has no credentials")
    except ConnectRefused:
        pass

    async with anonymous(service) as device_side:
        # What a person types from a label: lower case, no dashes.
        typed = code["claimCode"].replace("-", "").lower()
        claimed = await device_side.post("/claim", json={"claimCode": typed})
        assert claimed.status_code == 200, claimed.text
        body = claimed.json()
        assert body["deviceId"] == "factory-1"
        assert body["mqtt"] == {"host": "127.0.0.1", "port": broker.port, "tls": False}
        again = await device_side.post("/claim", json={"claimCode": code["claimCode"]})
        assert again.status_code == 403
        assert again.json()["error"]["code"] == "invalid_claim_code"

    device = await broker.device("factory-1", body["credentials"]["password"]).connect()
    await device.disconnect()
    trail = (await api.get("/audit", params={"target": "factory-1"})).json()["items"]
    assert [e["action"] for e in trail] == ["device.claim"]
    assert trail[0]["actor"] == "claim:10.0.0.1"


async def test_unknown_used_and_expired_codes_look_the_same(
    api: httpx.AsyncClient, service: Service
) -> None:
    [expiring] = await issue(api, count=1, ttlSeconds=1)
    [used] = await issue(api, count=1)
    async with anonymous(service, "10.0.0.2") as client:
        assert (
            await client.post("/claim", json={"claimCode": used["claimCode"]})
        ).status_code == 200
        await asyncio.sleep(1.2)
        answers = [
            await client.post("/claim", json={"claimCode": c})
            for c in (expiring["claimCode"], used["claimCode"], "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")
        ]
    assert {a.status_code for a in answers} == {403}
    assert len({a.text for a in answers}) == 1


async def test_concurrent_claims_have_exactly_one_winner(
    api: httpx.AsyncClient, service: Service
) -> None:
    [code] = await issue(api, count=1)
    async with anonymous(service, "10.0.0.3") as client:
        answers = await asyncio.gather(
            *(client.post("/claim", json={"claimCode": code["claimCode"]}) for _ in range(8))
        )
    assert sorted(a.status_code for a in answers) == [200] + [403] * 7


async def test_failed_claims_are_rate_limited_per_address(
    api: httpx.AsyncClient, service: Service
) -> None:
    [code] = await issue(api, count=1)
    async with anonymous(service, "10.0.0.4") as attacker, anonymous(service, "10.0.0.5") as other:
        for _ in range(10):
            assert (await attacker.post("/claim", json={"claimCode": "WRONG"})).status_code == 403
        limited = await attacker.post("/claim", json={"claimCode": code["claimCode"]})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        # Someone else, elsewhere, is not affected.
        assert (
            await other.post("/claim", json={"claimCode": code["claimCode"]})
        ).status_code == 200


async def test_claim_code_batches_validate(api: httpx.AsyncClient) -> None:
    items = await issue(api, count=5)
    assert len({i["deviceId"] for i in items}) == 5
    assert len({i["claimCode"] for i in items}) == 5
    for body in ({"count": 0}, {"ids": ["a/b"]}, {"ttlSeconds": 0}, {"ids": ["x-1", "x-1"]}):
        response = await api.post("/claim-codes", json={"model": "lamp", **body})
        assert response.status_code == 422, body
    taken = await api.post("/claim-codes", json={"model": "lamp", "ids": [items[0]["deviceId"]]})
    assert taken.status_code == 409
    async with httpx.AsyncClient(transport=api._transport, base_url="http://paku.test") as nobody:
        assert (await nobody.post("/claim-codes", json={"model": "lamp"})).status_code == 401


async def test_the_audit_trail_of_a_provisioning(api: httpx.AsyncClient) -> None:
    await api.post("/devices", json={"model": "lamp", "id": "aud-1"})
    await api.post("/devices/aud-1/credentials")
    await api.post("/devices/aud-1/commands", json={"name": "x"})
    await api.delete("/devices/aud-1")
    trail = (await api.get("/audit", params={"target": "aud-1"})).json()["items"]
    assert [e["action"] for e in trail] == [
        "device.delete",
        "command.send",
        "device.rotate_credentials",
        "device.provision",
    ]
    assert {e["actor"] for e in trail} == {"admin"}
    assert trail[-1]["details"] == {"model": "lamp"}
    assert "password" not in str(trail)


async def test_named_tokens_act_under_their_name_and_revocation_is_immediate(
    api: httpx.AsyncClient, service: Service
) -> None:
    token = await service.tokens.create("ci")
    async with httpx.AsyncClient(
        transport=api._transport,
        base_url="http://paku.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as ci:
        assert (await ci.post("/devices", json={"model": "m", "id": "tok-1"})).status_code == 201
        trail = (await api.get("/audit", params={"target": "tok-1"})).json()["items"]
        assert trail[0]["actor"] == "token:ci"
        assert await service.tokens.revoke("ci")
        refused = await ci.get("/devices")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_token"
    assert (await api.get("/devices")).status_code == 200  # the bootstrap token is unaffected
