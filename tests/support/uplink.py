"""A device sending what firmware sends, and what a user then sees through the API: the
uplink contract tests (tests/uplink) drive a real device client through Mosquitto into the
running service and read the result back over HTTP."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx

from tests.support import eventually
from tests.support.mqtt import DeviceClient


async def listing(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """The `items` of one page of a listing (GET /rejected, telemetry, events)."""
    response = await api.get(path, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def rejected_of(api: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    """The device's rejected messages, oldest first."""
    return list(reversed(await listing(api, "/rejected", deviceId=device_id)))


async def wait_rejected(
    api: httpx.AsyncClient, device_id: str, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """The device's rejected messages, oldest first, once there are `count` of them."""

    async def check() -> list[dict[str, Any]]:
        items = await rejected_of(api, device_id)
        assert len(items) >= count, items
        return items

    return await eventually(check, timeout=timeout)


async def wait_telemetry(
    api: httpx.AsyncClient, device_id: str, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """The device's telemetry, newest first, once there are `count` rows."""

    async def check() -> list[dict[str, Any]]:
        items = await listing(api, f"/devices/{device_id}/telemetry")
        assert len(items) >= count, items
        return items

    return await eventually(check, timeout=timeout)


async def device_view(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await api.get(f"/devices/{device_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_handled(api: httpx.AsyncClient, device: DeviceClient, device_id: str) -> None:
    """Return once everything `device` published so far has been handled: a marker sample
    goes last on the same connection, and the collector takes one connection's messages in
    order."""
    marker = {"ts": int(time.time() * 1000), "marker": secrets.token_hex(4)}
    assert await device.publish(f"paku/{device_id}/telemetry", json.dumps(marker)) == 0

    async def stored() -> None:
        rows = await listing(api, f"/devices/{device_id}/telemetry")
        assert any(row["payload"] == marker for row in rows)

    await eventually(stored)
