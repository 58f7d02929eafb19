"""Provisioning and the device registry through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from paku_iot.protocol import is_valid_device_id
from tests.support import eventually
from tests.support.broker import Broker

DEVICE_FIELDS = {
    "id",
    "model",
    "createdAt",
    "lastSeenAt",
    "online",
    "fwVersion",
    "rssi",
    "notes",
    "metadata",
    "tags",
    "decommissionedAt",
}


async def test_provision_returns_device_and_credentials_once(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/devices",
        json={
            "model": "sensor-v1",
            "id": "kitchen-01",
            "notes": "by the fridge",
            "metadata": {"room": "kitchen"},
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == DEVICE_FIELDS | {"credentials"}
    assert body["id"] == "kitchen-01"
    assert body["model"] == "sensor-v1"
    assert body["notes"] == "by the fridge"
    assert body["metadata"] == {"room": "kitchen"}
    assert body["online"] is False
    assert body["lastSeenAt"] is None
    assert body["createdAt"].endswith("Z")
    assert body["credentials"]["username"] == "kitchen-01"
    assert len(body["credentials"]["password"]) >= 22  # >= 128 bits in URL-safe base64

    again = await api.get("/devices/kitchen-01")
    assert again.status_code == 200
    assert set(again.json()) == DEVICE_FIELDS | {"reported"}  # never the password again
    assert again.json()["metadata"] == {"room": "kitchen"}
    assert again.json()["reported"] is None  # it has said nothing yet


async def test_provision_without_id_makes_one(api: httpx.AsyncClient) -> None:
    first = (await api.post("/devices", json={"model": "m"})).json()
    second = (await api.post("/devices", json={"model": "m"})).json()
    assert is_valid_device_id(first["id"])
    assert first["id"] != second["id"]
    assert first["credentials"]["password"] != second["credentials"]["password"]


@pytest.mark.parametrize(
    "bad_id", ["a+b", "a#b", "a/b", "$sys", "has space", "ab", "x" * 65, "dot.ted", ""]
)
async def test_provision_refuses_unsafe_ids(api: httpx.AsyncClient, bad_id: str) -> None:
    response = await api.post("/devices", json={"model": "m", "id": bad_id})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "id" in error["message"]


async def test_provision_refuses_a_taken_id(api: httpx.AsyncClient) -> None:
    assert (await api.post("/devices", json={"model": "m", "id": "dup-1"})).status_code == 201
    response = await api.post("/devices", json={"model": "other", "id": "dup-1"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "device_exists"
    assert (await api.get("/devices/dup-1")).json()["model"] == "m"


@pytest.mark.parametrize(
    "body",
    [{}, {"model": ""}, {"model": 5}, {"model": "m", "metadata": [1]}, {"model": "m", "x": 1}],
)
async def test_provision_refuses_bad_bodies(api: httpx.AsyncClient, body: object) -> None:
    response = await api.post("/devices", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


async def test_malformed_json_is_a_clear_error(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/devices", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}],
)
async def test_admin_calls_need_the_token(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    transport = api._transport  # the same app, without the admin header
    async with httpx.AsyncClient(transport=transport, base_url="http://paku.test") as anonymous:
        for method, path in [
            ("GET", "/devices"),
            ("POST", "/devices"),
            ("GET", "/devices/x-1"),
            ("PATCH", "/devices/x-1"),
            ("DELETE", "/devices/x-1"),
            ("GET", "/devices/x-1/telemetry"),
            ("GET", "/rejected"),
        ]:
            response = await anonymous.request(method, path, headers=headers, json={"model": "m"})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] in {"unauthorized", "invalid_token"}


async def test_list_pages_through_every_device_in_order(api: httpx.AsyncClient) -> None:
    ids = [f"dev-{n:03d}" for n in range(7)]
    for device_id in reversed(ids):
        await api.post("/devices", json={"model": "m", "id": device_id})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/devices", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3


async def test_list_filters_by_model(api: httpx.AsyncClient) -> None:
    await api.post("/devices", json={"model": "lamp", "id": "lamp-1"})
    await api.post("/devices", json={"model": "sensor", "id": "sensor-1"})
    page = (await api.get("/devices", params={"model": "lamp"})).json()
    assert [d["id"] for d in page["items"]] == ["lamp-1"]
    assert page["next"] is None
    offline = (await api.get("/devices", params={"online": "false"})).json()
    assert {d["id"] for d in offline["items"]} == {"lamp-1", "sensor-1"}
    online = (await api.get("/devices", params={"online": "true"})).json()
    assert online["items"] == []


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"cursor": "nonsense!"}, {"online": "maybe"}]
)
async def test_list_refuses_bad_parameters(
    api: httpx.AsyncClient, params: dict[str, object]
) -> None:
    response = await api.get("/devices", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] in {"invalid_input", "invalid_cursor"}


async def test_unknown_device_is_404_with_an_error_body(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/devices/nope-1"),
        ("DELETE", "/devices/nope-1"),
        ("POST", "/devices/nope-1/credentials"),
        ("GET", "/devices/nope-1/telemetry"),
        ("GET", "/devices/nope-1/events"),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == {
            "code": "device_not_found",
            "message": "no device 'nope-1'",
        }


async def test_unknown_route_uses_the_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_delete_removes_the_device(api: httpx.AsyncClient) -> None:
    await api.post("/devices", json={"model": "m", "id": "gone-1"})
    response = await api.delete("/devices/gone-1")
    assert response.status_code == 204
    assert response.content == b""
    assert (await api.get("/devices/gone-1")).status_code == 404


async def test_rotate_gives_a_new_password(api: httpx.AsyncClient) -> None:
    created = (await api.post("/devices", json={"model": "m", "id": "rot-1"})).json()
    rotated = await api.post("/devices/rot-1/credentials")
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["credentials"]["username"] == "rot-1"
    assert body["credentials"]["password"] != created["credentials"]["password"]


async def test_health_reports_every_component(api: httpx.AsyncClient) -> None:
    response = await api.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["components"] == {
        "database": "ok",
        "broker": "ok",
        "collector": "ok",
    }


async def test_openapi_is_served(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "/devices" in spec["paths"]
    assert "/devices/{device_id}/telemetry" in spec["paths"]
    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_a_device_shows_all_it_reported_in_its_state(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    created = (await api.post("/devices", json={"model": "m", "id": "rep-1"})).json()
    device = await broker.device("rep-1", created["credentials"]["password"]).connect()
    full = {"online": True, "rssi": -61, "fwVersion": "1.4.2", "configVersion": 3, "battery": 87}
    await device.publish("paku/rep-1/state", json.dumps(full), retain=True)
    await device.publish("paku/rep-1/state", '{"online": true, "battery": 80}', retain=True)

    async def merged() -> dict[str, Any]:
        shown = (await api.get("/devices/rep-1")).json()
        assert shown["reported"] == full | {"battery": 80}  # key by key, newest value wins
        return shown

    shown = await eventually(merged)
    assert (shown["online"], shown["rssi"], shown["fwVersion"]) == (True, -61, "1.4.2")
    # Pages of the list stay lean: the full state is the single device's.
    [listed] = (await api.get("/devices")).json()["items"]
    assert set(listed) == DEVICE_FIELDS
    await device.disconnect()


async def test_patch_changes_notes_and_metadata(api: httpx.AsyncClient) -> None:
    await api.post(
        "/devices", json={"model": "m", "id": "pat-1", "notes": "old", "metadata": {"a": 1}}
    )
    response = await api.patch("/devices/pat-1", json={"notes": "by the door"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == DEVICE_FIELDS | {"reported"}
    assert (body["notes"], body["metadata"]) == ("by the door", {"a": 1})  # metadata kept

    replaced = (await api.patch("/devices/pat-1", json={"metadata": {"room": "hall"}})).json()
    assert (replaced["notes"], replaced["metadata"]) == ("by the door", {"room": "hall"})

    cleared = (await api.patch("/devices/pat-1", json={"notes": None, "metadata": {}})).json()
    assert (cleared["notes"], cleared["metadata"]) == (None, {})
    assert (await api.get("/devices/pat-1")).json() == cleared

    trail = (await api.get("/audit", params={"action": "device.update"})).json()["items"]
    assert [(e["actor"], e["target"], e["details"]) for e in trail] == [
        ("admin", "pat-1", {"fields": ["metadata", "notes"]}),
        ("admin", "pat-1", {"fields": ["metadata"]}),
        ("admin", "pat-1", {"fields": ["notes"]}),
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "nothing to change"),
        ({"notes": "x" * 4001}, "notes"),
        ({"notes": 5}, "notes"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": "room=hall"}, "metadata"),
        ({"metadata": {"k": "a\x00b"}}, "NUL"),
        ({"model": "other"}, "model"),  # what a device is stays as it was made
        ({"id": "new-id"}, "id"),
    ],
)
async def test_patch_refuses_what_creation_refuses(
    api: httpx.AsyncClient, body: dict[str, object], named: str
) -> None:
    await api.post("/devices", json={"model": "m", "id": "pat-2", "notes": "kept"})
    response = await api.patch("/devices/pat-2", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert named in error["message"]
    assert (await api.get("/devices/pat-2")).json()["notes"] == "kept"


async def test_patch_of_an_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    response = await api.patch("/devices/nope-1", json={"notes": "x"})
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "device_not_found", "message": "no device 'nope-1'"}
    assert (await api.get("/audit", params={"target": "nope-1"})).json()["items"] == []
