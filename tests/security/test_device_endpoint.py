"""Where devices are told to connect: the claim answer and the dashboard's credentials pages
say the public MQTT endpoint (PAKU_DEVICE_MQTT_*), and production says TLS on 8883."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from paku_iot.server.service import running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN
from tests.support.ui import sign_in


@asynccontextmanager
async def dashboard_and_device_side(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of a service run with `settings`, as a browser (no credentials) sees it, over
    HTTPS: with an https PAKU_PUBLIC_URL the session cookie is `Secure`."""
    async with (
        running_service(settings) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)), base_url="https://paku.test"
        ) as client,
    ):
        yield client


async def claim_answer(client: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    issued = await client.post(
        "/claim-codes",
        json={"model": "lamp", "ids": [device_id]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert issued.status_code == 201, issued.text
    code = issued.json()["items"][0]["claimCode"]
    claimed = await client.post("/claim", json={"claimCode": code})
    assert claimed.status_code == 200, claimed.text
    body: dict[str, Any] = claimed.json()
    return body


async def credentials_pages(client: httpx.AsyncClient, device_id: str) -> list[str]:
    """The two pages that show a password with the broker: provisioning and rotation."""
    csrf = await sign_in(client)
    provisioned = await client.post(
        "/ui/provision/device", data={"csrf": csrf, "model": "lamp", "id": device_id}
    )
    assert provisioned.status_code == 201, provisioned.text
    rotated = await client.post(f"/ui/devices/{device_id}/credentials", data={"csrf": csrf})
    assert rotated.status_code == 200, rotated.text
    return [provisioned.text, rotated.text]


async def test_the_claim_answer_and_credentials_pages_show_the_configured_endpoint(
    settings: Settings,
) -> None:
    public = settings.model_copy(
        update={
            "public_url": "https://api.example.com",
            "device_mqtt_host": "mqtt.example.net",
            "device_mqtt_port": 9883,
            "device_mqtt_tls": True,
        }
    )
    async with dashboard_and_device_side(public) as client:
        answer = await claim_answer(client, "claimed-1")
        assert answer["mqtt"] == {"host": "mqtt.example.net", "port": 9883, "tls": True}
        # The whole answer, as docs/protocol.md section 1a shows it.
        assert set(answer) == {"deviceId", "credentials", "mqtt"}
        assert answer["credentials"]["username"] == answer["deviceId"] == "claimed-1"
        assert len(answer["credentials"]["password"]) == 32
        for bad in ({}, {"claimCode": ""}, {"claimCode": "A" * 101}, {"code": "x"}):
            refused = await client.post("/claim", json=bad)
            assert refused.status_code == 422, bad
            assert refused.json()["error"]["code"] == "invalid_input"
        for page in await credentials_pages(client, "made-1"):
            assert '<dd class="mono" id="cred-broker">mqtts://mqtt.example.net:9883</dd>' in page
            assert '<dd class="mono" id="cred-host">mqtt.example.net</dd>' in page
            assert '<dd class="mono" id="cred-port">9883</dd>' in page
            assert '<dd id="cred-tls">yes:' in page


async def test_production_tells_devices_tls_on_8883_at_the_public_host(
    settings: Settings,
) -> None:
    # Nothing about the device endpoint is set: only what compose/prod.yaml sets.
    production = settings.model_copy(
        update={
            "env": "production",
            "public_url": "https://iot.example.com",
            "admin_token": ADMIN_TOKEN + secrets.token_hex(8),
        }
    )
    token = production.admin_token
    assert token is not None
    async with dashboard_and_device_side(production) as client:
        issued = await client.post(
            "/claim-codes",
            json={"model": "lamp", "ids": ["prod-1"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        code = issued.json()["items"][0]["claimCode"]
        answer = (await client.post("/claim", json={"claimCode": code})).json()
        assert answer["mqtt"] == {"host": "iot.example.com", "port": 8883, "tls": True}
        csrf = await sign_in(client, token)
        rotated = await client.post("/ui/devices/prod-1/credentials", data={"csrf": csrf})
        assert "mqtts://iot.example.com:8883" in rotated.text
        assert "1883" not in rotated.text
