"""The telemetry listing passes payloads through as the database's JSON text: what a device
sent comes back as the same JSON value, whatever its strings, nesting and numbers."""

from __future__ import annotations

import json
import time

import httpx

from tests.support import eventually
from tests.support.broker import Broker

PAYLOADS = [
    {"s": 'quote " backslash \\ slash / tab \t newline \n', "u": "é 😀 ü"},
    {"nested": {"a": [1, 2.5, -3e-7, {"b": None}], "t": True, "f": False}},
    {"big": 12345678901234567890, "neg": -0.0, "small": 1e-300, "empty": {}, "list": []},
]


async def test_payloads_come_back_as_sent(api: httpx.AsyncClient, broker: Broker) -> None:
    password = (await api.post("/devices", json={"model": "m", "id": "json-1"})).json()[
        "credentials"
    ]["password"]
    device = await broker.device("json-1", password).connect()
    base = int(time.time() * 1000) - 10_000
    sent = []
    for n, payload in enumerate(PAYLOADS):
        body = {"ts": base + n, **payload}
        sent.append(body)
        assert await device.publish("paku/json-1/telemetry", json.dumps(body)) == 0
    await device.disconnect()

    async def listed() -> list[dict[str, object]]:
        response = await api.get("/devices/json-1/telemetry", params={"limit": 2})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        page = response.json()
        rest = await api.get(
            "/devices/json-1/telemetry", params={"limit": 2, "cursor": page["next"]}
        )
        items: list[dict[str, object]] = page["items"] + rest.json()["items"]
        assert len(items) == len(PAYLOADS)
        assert rest.json()["next"] is None
        return items

    items = await eventually(listed)
    assert [item["payload"] for item in items] == sent[::-1]  # newest first
    for item in items:
        assert str(item["ts"]).endswith("Z")
        assert str(item["receivedAt"]).endswith("Z")
