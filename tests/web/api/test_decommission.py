"""Decommissioning through the HTTP API against the real broker, on SQLite and PostgreSQL:
the credentials stop working and a live session is dropped, the history stays readable, the
list hides the device unless asked, and only recommissioning gives it credentials again."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import eventually
from tests.support.broker import Broker
from tests.support.mqtt import ConnectRefused


async def test_decommission_revokes_keeps_history_and_hides(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    created = (
        await api.post("/devices", json={"model": "m", "id": "old-1", "tags": ["site-a"]})
    ).json()
    await api.post("/devices", json={"model": "m", "id": "new-1"})
    password = created["credentials"]["password"]
    device = await broker.device("old-1", password).connect()
    await device.publish("paku/old-1/telemetry", json.dumps({"ts": 1780000000000, "t": 21.5}))
    await device.publish("paku/old-1/event/boot", json.dumps({"ts": 1780000000000}))
    queued = await api.post("/devices/old-1/commands", json={"name": "reboot"})
    assert queued.status_code == 202

    async def stored() -> None:
        assert len((await api.get("/devices/old-1/telemetry")).json()["items"]) == 1
        assert len((await api.get("/devices/old-1/events")).json()["items"]) == 1

    await eventually(stored)

    response = await api.post("/devices/old-1/decommission")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decommissionedAt"] is not None
    assert body["tags"] == ["site-a"]

    # The session is dropped and the old password connects no more.
    async def dropped() -> None:
        assert not device.is_connected

    await eventually(dropped)
    with pytest.raises(ConnectRefused):
        await broker.device("old-1", password).connect()

    # Hidden from the list (and from tag and model filters), shown when asked for.
    listed = (await api.get("/devices")).json()["items"]
    assert [d["id"] for d in listed] == ["new-1"]
    assert (await api.get("/devices", params={"tag": "site-a"})).json()["items"] == []
    only = (await api.get("/devices", params={"decommissioned": "true"})).json()["items"]
    assert [d["id"] for d in only] == ["old-1"]

    # The history is all still there.
    assert (await api.get("/devices/old-1")).json()["decommissionedAt"] == body["decommissionedAt"]
    assert len((await api.get("/devices/old-1/telemetry")).json()["items"]) == 1
    assert len((await api.get("/devices/old-1/events")).json()["items"]) == 1
    assert len((await api.get("/devices/old-1/commands")).json()["items"]) == 1

    # Twice is the same; no rotation while decommissioned; a model command skips it.
    again = await api.post("/devices/old-1/decommission")
    assert again.json()["decommissionedAt"] == body["decommissionedAt"]
    rotate = await api.post("/devices/old-1/credentials")
    assert rotate.status_code == 409
    assert rotate.json()["error"]["code"] == "device_decommissioned"
    to_model = await api.post("/commands", json={"model": "m", "name": "x"})
    assert [c["deviceId"] for c in to_model.json()["items"]] == ["new-1"]


async def test_recommission_gives_new_credentials(api: httpx.AsyncClient, broker: Broker) -> None:
    await api.post("/devices", json={"model": "m", "id": "back-1"})
    in_service = await api.post("/devices/back-1/recommission")
    assert in_service.status_code == 409
    assert in_service.json()["error"]["code"] == "device_in_service"
    await api.post("/devices/back-1/decommission")

    response = await api.post("/devices/back-1/recommission")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decommissionedAt"] is None
    assert body["credentials"]["username"] == "back-1"
    device = await broker.device("back-1", body["credentials"]["password"]).connect()
    assert device.is_connected
    await device.disconnect()
    assert [d["id"] for d in (await api.get("/devices")).json()["items"]] == ["back-1"]


async def test_decommission_of_an_unknown_device_is_404(api: httpx.AsyncClient) -> None:
    for path in ("/devices/ghost-1/decommission", "/devices/ghost-1/recommission"):
        response = await api.post(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "device_not_found"
