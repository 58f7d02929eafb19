"""State as firmware sends it: one bad field must not throw away the good ones. The device
still goes online (and its queued commands go out); the bad field is listed in GET /rejected
by name."""

from __future__ import annotations

import json

import httpx

from paku_iot.server.service import Service
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.downlink import command_status, next_message, provision
from tests.support.uplink import all_handled, device_view, rejected_of, wait_rejected


async def test_an_integral_float_rssi_is_taken_as_the_integer(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await broker.device("fl-1", await provision(api, "fl-1")).connect()
    # What firmware that keeps RSSI in a float prints.
    state = {"online": True, "rssi": -61.0, "fwVersion": "1.4.2", "configVersion": 3.0}
    assert await device.publish("paku/fl-1/state", json.dumps(state), retain=True) == 0
    await all_handled(api, device, "fl-1")

    view = await device_view(api, "fl-1")
    assert (view["online"], view["rssi"], view["fwVersion"]) == (True, -61, "1.4.2")
    assert (await api.get("/devices/fl-1/config")).json()["reportedVersion"] == 3
    assert await rejected_of(api, "fl-1") == []
    await device.disconnect()


async def test_a_bad_field_is_rejected_by_name_and_the_rest_applied(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    password = await provision(api, "fl-2")
    queued = (await api.post("/devices/fl-2/commands", json={"name": "blink"})).json()
    assert queued["status"] == "queued"

    device = await broker.device("fl-2", password).connect()
    assert await device.subscribe("paku/fl-2/cmd") == 1
    state = {
        "online": True,
        "rssi": -61.5,  # not a whole dBm: the bad field
        "fwVersion": "1.4.2",
        "configVersion": 2,
        "uptimeS": 10,
    }
    assert await device.publish("paku/fl-2/state", json.dumps(state), retain=True) == 0

    # Online, so the queued command goes out.
    command = json.loads((await next_message(device)).payload)
    assert command["id"] == queued["id"]
    assert (await command_status(api, "fl-2", queued["id"]))["status"] == "sent"
    view = await device_view(api, "fl-2")
    assert (view["online"], view["rssi"], view["fwVersion"]) == (True, None, "1.4.2")
    assert (await api.get("/devices/fl-2/config")).json()["reportedVersion"] == 2
    reported = (await service.registry.get("fl-2")).reported_state
    assert reported == {"online": True, "fwVersion": "1.4.2", "configVersion": 2, "uptimeS": 10}

    [item] = await wait_rejected(api, "fl-2", 1)
    assert item["reason"] == "invalid_state"
    assert item["topic"] == "paku/fl-2/state"
    assert item["detail"].startswith("rssi -61.5: must be an integer dBm from -200 to 50")
    assert "the other fields were applied" in item["detail"]
    assert json.loads(item["payload"]) == state

    # A later good value is applied; the earlier one stays in place when a field is bad.
    good = {**state, "rssi": -58, "configVersion": "three"}
    assert await device.publish("paku/fl-2/state", json.dumps(good), retain=True) == 0

    async def applied() -> None:
        assert (await device_view(api, "fl-2"))["rssi"] == -58

    await eventually(applied)
    assert (await api.get("/devices/fl-2/config")).json()["reportedVersion"] == 2
    second = (await wait_rejected(api, "fl-2", 2))[1]
    assert second["detail"].startswith('configVersion "three": must be a non-negative integer')
    await device.disconnect()


async def test_a_state_with_nothing_valid_is_rejected_whole(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await broker.device("fl-3", await provision(api, "fl-3")).connect()
    bad = {"online": "yes", "rssi": "strong"}
    assert await device.publish("paku/fl-3/state", json.dumps(bad)) == 0
    [item] = await wait_rejected(api, "fl-3", 1)
    assert item["reason"] == "invalid_state"
    assert item["detail"] == (
        'online "yes": must be true or false; rssi "strong": must be an integer dBm from '
        "-200 to 50; nothing was applied"
    )
    view = await device_view(api, "fl-3")
    assert (view["online"], view["rssi"], view["lastSeenAt"]) == (False, None, None)
    await device.disconnect()
