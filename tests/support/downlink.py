"""Devices that take commands and desired configuration, as the downlink tests drive them:
provisioned through the API, online on the broker, reading their cmd and config topics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.support import eventually
from tests.support.broker import Broker
from tests.support.mqtt import DeviceClient, Received


async def provision(api: httpx.AsyncClient, device_id: str, model: str = "lamp") -> str:
    response = await api.post("/devices", json={"model": model, "id": device_id})
    assert response.status_code == 201, response.text
    password: str = response.json()["credentials"]["password"]
    return password


async def go_online(
    api: httpx.AsyncClient, broker: Broker, device_id: str, password: str, **state: Any
) -> DeviceClient:
    """Connect as the device does: subscribe to its downlink, then say it is online."""
    device = await broker.device(
        device_id, password, will=(f"paku/{device_id}/state", b'{"online": false}')
    ).connect()
    assert await device.subscribe(f"paku/{device_id}/cmd") == 1
    assert await device.subscribe(f"paku/{device_id}/config") == 1
    await device.publish(
        f"paku/{device_id}/state", json.dumps({"online": True, **state}), retain=True
    )

    async def online() -> None:
        assert (await api.get(f"/devices/{device_id}")).json()["online"] is True

    await eventually(online)
    return device


async def next_message(device: DeviceClient, timeout: float = 10) -> Received:
    return await asyncio.to_thread(device.messages.get, True, timeout)


async def command_status(api: httpx.AsyncClient, device_id: str, command_id: str) -> dict[str, Any]:
    response = await api.get(f"/devices/{device_id}/commands/{command_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_status(
    api: httpx.AsyncClient, device_id: str, command_id: str, status: str, timeout: float = 10
) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        body = await command_status(api, device_id, command_id)
        assert body["status"] == status, body
        return body

    return await eventually(check, timeout=timeout)
