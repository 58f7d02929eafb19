"""A new image is confirmed after its first healthy run, or rolled back: the reference device
(device/firmware.py) against a real `paku-iot dev` (Mosquitto, the collector, the API)."""

from __future__ import annotations

from typing import Any

import pytest

from paku_iot.device import OtaError, ReferenceDevice
from paku_iot.protocol import OTA_BOOT_PREVIOUS_COMMAND
from tests.support import eventually
from tests.test_ota_flow import MODEL, Dev, dev, public_key, publish

__all__ = ["dev"]  # the fixture, shared with test_ota_flow


async def _device(dev: Dev, device_id: str, window_s: float) -> ReferenceDevice:
    password = await dev.provision(device_id)
    device = ReferenceDevice(
        "127.0.0.1", dev.mqtt_port, device_id, password, model=MODEL, confirm_window_s=window_s
    )
    await device.connect()
    return device


async def _ota_events(dev: Dev, device_id: str) -> list[dict[str, Any]]:
    async with dev.admin() as client:
        response = await client.get(f"/devices/{device_id}/events", params={"type": "ota"})
    assert response.status_code == 200, response.text
    return [item["payload"] for item in reversed(response.json()["items"])]


async def _reported_fw(dev: Dev, device_id: str) -> str:
    async with dev.admin() as client:
        response = await client.get(f"/devices/{device_id}")
    assert response.status_code == 200, response.text
    version: str = response.json()["fwVersion"]
    return version


async def test_confirm_after_a_healthy_run_then_boot_previous(dev: Dev) -> None:
    key = await public_key(dev)
    device = await _device(dev, "ota-ok", window_s=30)
    try:
        release, _ = await publish(dev, "1.1.0", size=100_000)
        assert await device.update_firmware(dev.base_url, key, dev.cwd / "ota-ok") == "1.1.0"
        assert device.firmware.pending_verify
        assert device.fw_version == "1.1.0"
        with pytest.raises(OtaError, match="awaits confirmation"):
            await device.update_firmware(dev.base_url, key, dev.cwd / "ota-ok")
        await device.send_telemetry({"temp": 21.0})  # the first healthy run
        await device.wait_for(lambda: not device.firmware.pending_verify)
        await device.wait_for(lambda: len(device.firmware.reports) == 1)
        assert device.firmware.reports[0]["status"] == "confirmed"

        async def confirmed() -> None:
            statuses = [e["status"] for e in await _ota_events(dev, "ota-ok")]
            assert statuses == ["downloading", "installing", "installed", "confirmed"]

        await eventually(confirmed)
        await dev.wait_for_status(release["id"], "ota-ok", "confirmed")

        # Boot previous: answered, then back on 1.0.0 without a download.
        command = await dev.command("ota-ok", OTA_BOOT_PREVIOUS_COMMAND)
        assert command["status"] == "acked", command
        assert command["result"] == {"from": "1.1.0", "to": "1.0.0"}
        await device.wait_for(lambda: device.fw_version == "1.0.0" and device.connected)
        await dev.wait_for_status(release["id"], "ota-ok", "rolled_back")
        events = await _ota_events(dev, "ota-ok")
        assert events[-1]["status"] == "rolled_back"
        assert events[-1]["version"] == "1.1.0"
        assert events[-1]["runningVersion"] == "1.0.0"
        assert await _reported_fw(dev, "ota-ok") == "1.0.0"
        # The version left is not taken again, and there is nothing further back.
        assert await device.update_firmware(dev.base_url, key, dev.cwd / "ota-ok") is None
        again = await dev.command("ota-ok", OTA_BOOT_PREVIOUS_COMMAND)
        assert again["status"] == "failed", again
        assert "no previous image" in again["error"]
        assert device.fw_version == "1.0.0"
    finally:
        await device.disconnect()


async def test_a_bad_build_rolls_back(dev: Dev) -> None:
    key = await public_key(dev)
    hangs = await _device(dev, "ota-hang", window_s=2)
    crashes = await _device(dev, "ota-crash", window_s=30)
    try:
        release, _ = await publish(dev, "1.1.0", size=100_000)

        # Runs, but never healthy: the window passes and the device goes back.
        hangs.firmware.fault = "unhealthy"
        assert await hangs.update_firmware(dev.base_url, key, dev.cwd / "ota-hang") == "1.1.0"
        await hangs.send_telemetry({"temp": 1.0})  # acknowledged, but the build is unhealthy
        await hangs.wait_for(lambda: hangs.firmware.slots.rollbacks == 1, timeout=15)
        await hangs.wait_for(lambda: hangs.connected and len(hangs.firmware.reports) == 1)
        assert hangs.fw_version == "1.0.0"
        await dev.wait_for_status(release["id"], "ota-hang", "rolled_back")
        last = (await _ota_events(dev, "ota-hang"))[-1]
        assert last["status"] == "rolled_back"
        assert (last["version"], last["runningVersion"]) == ("1.1.0", "1.0.0")
        assert "no healthy run within 2 s" in last["error"]
        assert await _reported_fw(dev, "ota-hang") == "1.0.0"
        assert await hangs.update_firmware(dev.base_url, key, dev.cwd / "ota-hang") is None

        # Crashes on start: back at once, the state never shows the new version.
        crashes.firmware.fault = "crash"
        assert await crashes.update_firmware(dev.base_url, key, dev.cwd / "ota-crash") == "1.1.0"
        assert crashes.fw_version == "1.0.0"
        assert crashes.connected
        await dev.wait_for_status(release["id"], "ota-crash", "rolled_back")
        last = (await _ota_events(dev, "ota-crash"))[-1]
        assert (last["status"], last["runningVersion"]) == ("rolled_back", "1.0.0")
        assert last["error"] == "crashed on start"
    finally:
        await hangs.disconnect()
        await crashes.disconnect()
