"""A claim code only ever gives a device its first credentials: once the device has
credentials, by whatever path, whoever holds its label can no longer take over its identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from paku_iot.security.claims import code_hash, new_claim_code
from paku_iot.server.service import Service
from paku_iot.storage.records import NewClaimCode
from paku_iot.storage.security import ClaimCodeStore
from tests.security.test_claims_audit_tokens import anonymous, issue
from tests.support.broker import Broker


async def _connects(broker: Broker, device_id: str, password: str) -> bool:
    client = broker.device(device_id, password)
    try:
        await client.connect()
    except Exception:
        return False
    await client.disconnect()
    return True


async def test_a_code_is_refused_once_the_device_got_credentials_another_way(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    [label] = await issue(api, ids=["retire-1"])
    rotated = await api.post("/devices/retire-1/credentials")
    assert rotated.status_code == 200, rotated.text
    password = rotated.json()["credentials"]["password"]

    async with anonymous(service, "10.0.1.1") as holder_of_the_label:
        answer = await holder_of_the_label.post("/claim", json={"claimCode": label["claimCode"]})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "invalid_claim_code"
    assert "password" not in answer.text
    # The device keeps the identity it was given: its password still works.
    assert await _connects(broker, "retire-1", password)
    trail = (await api.get("/audit", params={"target": "retire-1"})).json()["items"]
    assert "device.claim" not in [e["action"] for e in trail]


async def test_a_successful_claim_retires_the_devices_other_codes(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    [label] = await issue(api, ids=["retire-2"])
    # A second label for the same device (a reprint): not something the API hands out, so it
    # goes straight into the table.
    now = datetime.now(UTC)
    reprint = new_claim_code()
    await ClaimCodeStore(service.engine).insert(
        [NewClaimCode(code_hash(reprint), "retire-2", now, now + timedelta(days=1))]
    )
    async with anonymous(service, "10.0.1.2") as device_side:
        first = await device_side.post("/claim", json={"claimCode": label["claimCode"]})
        assert first.status_code == 200, first.text
        second = await device_side.post("/claim", json={"claimCode": reprint})
    assert second.status_code == 403
    assert second.json()["error"]["code"] == "invalid_claim_code"
    assert await _connects(broker, "retire-2", first.json()["credentials"]["password"])


async def test_a_code_left_over_from_before_is_refused_for_a_device_with_credentials(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    """A database from an older version may hold live codes of devices provisioned since:
    they are refused too, not only the codes retired from now on."""
    made = await api.post("/devices", json={"model": "lamp", "id": "retire-3"})
    assert made.status_code == 201
    password = made.json()["credentials"]["password"]
    now = datetime.now(UTC)
    stale = new_claim_code()
    await ClaimCodeStore(service.engine).insert(
        [NewClaimCode(code_hash(stale), "retire-3", now, now + timedelta(days=1))]
    )
    async with anonymous(service, "10.0.1.3") as holder_of_the_label:
        answer = await holder_of_the_label.post("/claim", json={"claimCode": stale})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "invalid_claim_code"
    assert await _connects(broker, "retire-3", password)
