"""Desired configuration: versioned, retained, reported back, cleared with the device."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.support import eventually
from tests.support.broker import Broker
from tests.support.downlink import go_online, next_message, provision


async def test_config_set_while_offline_is_applied_on_reconnect(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "cfg-1")
    before = (await api.get("/devices/cfg-1/config")).json()
    assert before == {
        "version": 0,
        "config": {},
        "reportedVersion": None,
        "inSync": True,
        "updatedAt": None,
    }
    first = await api.put("/devices/cfg-1/config", json={"config": {"interval": 60}})
    assert first.status_code == 200
    second = (await api.put("/devices/cfg-1/config", json={"config": {"interval": 30}})).json()
    assert second["version"] == 2
    assert second["config"] == {"interval": 30}
    assert second["inSync"] is False

    device = await go_online(api, broker, "cfg-1", password, configVersion=0)
    delivered = await next_message(device)
    assert delivered.topic == "paku/cfg-1/config"
    assert delivered.retain  # kept by the broker for a device that was away
    assert json.loads(delivered.payload) == {"version": 2, "config": {"interval": 30}}

    await device.publish(
        "paku/cfg-1/state", json.dumps({"online": True, "configVersion": 2}), retain=True
    )

    async def in_sync() -> None:
        view = (await api.get("/devices/cfg-1/config")).json()
        assert view["reportedVersion"] == 2
        assert view["inSync"] is True

    await eventually(in_sync)

    third = (await api.put("/devices/cfg-1/config", json={"config": {"interval": 5}})).json()
    assert third["version"] == 3
    assert third["inSync"] is False
    live = await next_message(device)
    assert json.loads(live.payload)["version"] == 3
    await device.disconnect()


async def test_bad_config_bodies_are_refused(api: httpx.AsyncClient) -> None:
    await provision(api, "cfg-2")
    for body in ({}, {"config": [1]}, {"config": "x"}, {"config": {}, "extra": 1}):
        response = await api.put("/devices/cfg-2/config", json=body)
        assert response.status_code == 422, body
    assert (await api.put("/devices/nope-1/config", json={"config": {}})).status_code == 404
    assert (await api.get("/devices/cfg-2/config")).json()["version"] == 0


async def test_bad_config_version_in_state_is_rejected(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await go_online(api, broker, "cfg-3", await provision(api, "cfg-3"))
    await device.publish("paku/cfg-3/state", '{"online": true, "configVersion": "two"}')

    async def rejected() -> None:
        items = (await api.get("/rejected", params={"deviceId": "cfg-3"})).json()["items"]
        assert [i["reason"] for i in items] == ["invalid_state"]

    await eventually(rejected)
    await device.disconnect()


async def test_deleting_a_device_clears_its_retained_topics(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await go_online(api, broker, "cfg-4", await provision(api, "cfg-4"))
    await api.put("/devices/cfg-4/config", json={"config": {"a": 1}})
    await next_message(device)
    await device.disconnect()
    assert (await api.delete("/devices/cfg-4")).status_code == 204

    watcher = await broker.backend().connect()
    await watcher.subscribe("paku/cfg-4/#")
    await asyncio.sleep(0.5)  # retained messages arrive right after the subscription
    assert watcher.messages.empty(), watcher.messages.get_nowait()
    await watcher.disconnect()
    rejected = (await api.get("/rejected", params={"deviceId": "cfg-4"})).json()["items"]
    assert rejected == []  # clearing the retained state is not bad input


async def test_config_change_is_refused_while_the_broker_is_down(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    await provision(api, "cfg-5")
    broker.stop()

    async def refused() -> None:
        response = await api.put("/devices/cfg-5/config", json={"config": {"a": 1}})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"

    await eventually(refused)
    assert (await api.get("/devices/cfg-5/config")).json()["version"] == 0
    broker.start()
