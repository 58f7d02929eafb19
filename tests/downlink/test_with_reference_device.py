"""The whole downlink with the reference device, against the service on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from paku_iot.device import CommandError, ReferenceDevice
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.downlink import provision, wait_status


def reference_device(broker: Broker, device_id: str, password: str) -> ReferenceDevice:
    device = ReferenceDevice(broker.host, broker.port, device_id, password, fw_version="2.1.0")

    async def blink(params: dict[str, Any]) -> dict[str, Any]:
        return {"blinked": params.get("times", 1)}

    async def explode(_params: dict[str, Any]) -> None:
        raise CommandError("not today")

    device.on_command("blink", blink)
    device.on_command("explode", explode)
    return device


async def test_reference_device_acks_fails_and_catches_up(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "ref-1")
    # While it is away: a command waits, and two config versions are set.
    queued = (await api.post("/devices/ref-1/commands", json={"name": "blink"})).json()
    assert queued["status"] == "queued"
    await api.put("/devices/ref-1/config", json={"config": {"led": "on"}})
    await api.put("/devices/ref-1/config", json={"config": {"led": "dim"}})

    device = reference_device(broker, "ref-1", password)
    await device.connect()
    try:
        await device.wait_for_config(2)
        assert device.config == {"led": "dim"}
        await wait_status(api, "ref-1", queued["id"], "acked")

        async def in_sync() -> None:
            view = (await api.get("/devices/ref-1/config")).json()
            assert view["inSync"] is True
            assert view["reportedVersion"] == 2

        await eventually(in_sync)
        shown = (await api.get("/devices/ref-1")).json()
        assert shown["online"] is True
        assert shown["fwVersion"] == "2.1.0"

        live = (
            await api.post(
                "/devices/ref-1/commands", json={"name": "blink", "params": {"times": 4}}
            )
        ).json()
        # Sent at once, the device being online. The reference device answers at once too,
        # so the answer may already be stored when the API reads the command back to reply.
        assert live["sentAt"] is not None
        assert live["status"] in {"sent", "acked"}, live
        done = await wait_status(api, "ref-1", live["id"], "acked")
        assert done["result"] == {"blinked": 4}

        failing = (await api.post("/devices/ref-1/commands", json={"name": "explode"})).json()
        failed = await wait_status(api, "ref-1", failing["id"], "failed")
        assert failed["error"] == "not today"

        unknown = (await api.post("/devices/ref-1/commands", json={"name": "dance"})).json()
        assert (await wait_status(api, "ref-1", unknown["id"], "failed"))["error"].startswith(
            "unknown command"
        )
    finally:
        await device.disconnect()

    async def offline() -> None:
        assert (await api.get("/devices/ref-1")).json()["online"] is False

    await eventually(offline)


async def test_bulk_command_reaches_every_reference_device(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    devices = []
    for n in range(3):
        device_id = f"ref-bulk-{n}"
        device = reference_device(broker, device_id, await provision(api, device_id, "bulb"))
        await device.connect()
        devices.append(device)
    try:
        response = await api.post(
            "/commands", json={"model": "bulb", "name": "blink", "params": {"times": 2}}
        )
        items = response.json()["items"]
        assert len(items) == 3
        for item in items:
            done = await wait_status(api, item["deviceId"], item["id"], "acked")
            assert done["result"] == {"blinked": 2}
    finally:
        for device in devices:
            await device.disconnect()
