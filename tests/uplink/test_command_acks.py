"""Command answers as firmware sends them: on `event/ack`, or as an `ack` object in the
retained state. Both settle the command the same way; an answer that cannot settle anything
is listed in GET /rejected with the reason, on either path."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from paku_iot.server.service import Service
from tests.support.broker import Broker
from tests.support.downlink import command_status, go_online, next_message, provision, wait_status
from tests.support.mqtt import DeviceClient
from tests.support.uplink import all_handled, device_view, listing, rejected_of, wait_rejected


async def send_command(api: httpx.AsyncClient, device: DeviceClient, device_id: str) -> str:
    created = await api.post(f"/devices/{device_id}/commands", json={"name": "blink"})
    assert created.is_success, created.text
    command_id: str = created.json()["id"]
    assert json.loads((await next_message(device)).payload)["id"] == command_id
    return command_id


async def test_an_ack_in_state_settles_the_command(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    device = await go_online(api, broker, "st-1", await provision(api, "st-1"))
    first = await send_command(api, device, "st-1")
    # Firmware that reports everything in its state: the answer rides along.
    state: dict[str, Any] = {
        "online": True,
        "rssi": -60,
        "fwVersion": "1.4.2",
        "ack": {"id": first, "ok": True, "result": {"on": 1}},
    }
    assert await device.publish("paku/st-1/state", json.dumps(state), retain=True) == 0
    acked = await wait_status(api, "st-1", first, "acked")
    assert acked["result"] == {"on": 1}
    assert acked["error"] is None

    second = await send_command(api, device, "st-1")
    state["ack"] = {"id": second, "ok": False, "error": "busy"}
    assert await device.publish("paku/st-1/state", json.dumps(state), retain=True) == 0
    failed = await wait_status(api, "st-1", second, "failed")
    assert failed["error"] == "busy"

    # The rest of the state is applied as usual; the ack is not part of it.
    view = await device_view(api, "st-1")
    assert (view["online"], view["rssi"], view["fwVersion"]) == (True, -60, "1.4.2")
    reported = (await service.registry.get("st-1")).reported_state
    assert reported == {"online": True, "rssi": -60, "fwVersion": "1.4.2"}

    # The device publishes its full state again, old answer included: that is a repeat of an
    # answer already recorded, not an error, and changes nothing.
    assert await device.publish("paku/st-1/state", json.dumps(state), retain=True) == 0
    await all_handled(api, device, "st-1")
    assert await rejected_of(api, "st-1") == []
    assert (await command_status(api, "st-1", second))["status"] == "failed"
    assert (await command_status(api, "st-1", first))["status"] == "acked"
    await device.disconnect()


async def test_a_state_that_only_carries_an_ack_settles_it(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await go_online(api, broker, "st-2", await provision(api, "st-2"), rssi=-70)
    command_id = await send_command(api, device, "st-2")
    ack = json.dumps({"ack": {"id": command_id, "ok": True}})
    assert await device.publish("paku/st-2/state", ack) == 0
    await wait_status(api, "st-2", command_id, "acked")
    assert (await device_view(api, "st-2"))["rssi"] == -70
    await device.disconnect()


def carrying(path: str, device_id: str, ack: dict[str, Any]) -> tuple[str, str]:
    """The topic and payload that carry `ack` on `path`."""
    if path == "event":
        return f"paku/{device_id}/event/ack", json.dumps(ack)
    return f"paku/{device_id}/state", json.dumps({"online": True, "rssi": -55, "ack": ack})


@pytest.mark.parametrize("path", ["event", "state"])
async def test_acks_that_settle_nothing_are_listed_in_rejected(
    api: httpx.AsyncClient, broker: Broker, path: str
) -> None:
    device = await go_online(api, broker, "st-3", await provision(api, "st-3"))
    other = await go_online(api, broker, "st-4", await provision(api, "st-4"))
    command_id = await send_command(api, device, "st-3")
    answer = {"id": command_id, "ok": True, "result": "done", "ts": 1780000000000}
    sends = [
        (device, "st-3", {"id": "c-nope", "ok": True}),  # an id the backend never issued
        (other, "st-4", {"id": command_id, "ok": True}),  # another device's command
        (device, "st-3", {"id": command_id, "ok": "true"}),  # ok as a string
        (device, "st-3", {"ok": True}),  # no id
        (device, "st-3", {"id": command_id, "ok": True, "ts": 12}),  # clock not set
        (device, "st-3", answer),  # settles it
        (device, "st-3", {"id": command_id, "ok": False, "error": "late"}),  # a second answer
        (device, "st-3", answer),  # the same answer again: a redelivery, not an error
    ]
    for sender, device_id, ack in sends:
        assert await sender.publish(*carrying(path, device_id, ack)) == 0
    await all_handled(api, device, "st-3")
    await all_handled(api, other, "st-4")

    done = await command_status(api, "st-3", command_id)
    assert (done["status"], done["result"], done["error"]) == ("acked", "done", None)
    items = await wait_rejected(api, "st-3", 5)
    topic = "paku/st-3/event/ack" if path == "event" else "paku/st-3/state"
    assert {i["topic"] for i in items} == {topic}
    # One batch may hold several: order among them is not part of the contract.
    late_ts = next(i["detail"] for i in items if i["reason"] == "invalid_ts")
    assert "ts 12 (epoch seconds" in late_ts
    assert sorted((i["reason"], i["detail"]) for i in items) == sorted(
        [
            ("unknown_command", "ack for 'c-nope': this device has no command with that id"),
            ("invalid_ack", 'ack: ok must be true or false, not the string "true"'),
            ("invalid_ack", "ack: id must be the command's id, a non-empty string; got none"),
            ("invalid_ts", late_ts),
            (
                "already_answered",
                f"ack for {command_id!r}: the command was already answered (acked) otherwise; "
                "this answer changed nothing",
            ),
        ]
    )
    [foreign] = await rejected_of(api, "st-4")
    assert foreign["reason"] == "unknown_command"

    if path == "event":
        # The device's words are kept as events all the same (all but the one whose ts was
        # refused, and the redelivery, which is stored once).
        acks = await listing(api, "/devices/st-3/events", type="ack")
        assert len(acks) == 5
    else:
        # The state around the answers was applied each time.
        assert (await device_view(api, "st-3"))["rssi"] == -55
    await device.disconnect()
    await other.disconnect()
