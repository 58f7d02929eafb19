"""The device's firmware slots (device/firmware.py) without MQTT: a stand-in device that
records what it would publish, connects when told, and counts telemetry PUBACKs by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from paku_iot.device.firmware import FirmwareKeeper, NoPreviousImage


class StandIn:
    device_id = "fw-1"

    def __init__(self, window_s: float = 0.3) -> None:
        self.fw_version = "1.0.0"
        self.online = True
        self.reachable = True
        self.telemetry_acknowledged = 0
        self.sent: list[dict[str, Any]] = []
        self.firmware = FirmwareKeeper(cast(Any, self), window_s)

    @property
    def connected(self) -> bool:
        return self.online

    async def send_event(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        assert name == "ota"
        if not self.online:
            raise ConnectionError("offline")
        self.sent.append(dict(document))
        return dict(document)

    async def disconnect(self) -> None:
        await self.firmware.stop()
        self.online = False

    async def connect(self) -> None:
        if not self.reachable:
            raise ConnectionError("no broker")
        self.online = True
        self.firmware.connected()

    async def restart(self, *, fw_version: str) -> None:
        await self.disconnect()
        self.fw_version = fw_version
        await self.connect()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    def notify_change(self) -> None:
        pass

    async def downlink_settled(self, timeout: float) -> None:
        pass


def statuses(device: StandIn) -> list[tuple[str, str, str | None]]:
    return [(d["status"], d["version"], d.get("runningVersion")) for d in device.sent]


async def test_a_healthy_first_run_confirms() -> None:
    device = StandIn(window_s=5)
    await device.firmware.boot_new("1.1.0")
    assert (device.fw_version, device.firmware.pending_verify) == ("1.1.0", True)
    await asyncio.sleep(0.05)
    assert device.sent == []  # connected, but no telemetry acknowledged yet
    device.telemetry_acknowledged += 1
    await device.wait_for(lambda: not device.firmware.pending_verify)
    await device.wait_for(lambda: bool(device.sent))
    assert statuses(device) == [("confirmed", "1.1.0", None)]
    assert device.firmware.slots.previous == "1.0.0"
    await device.disconnect()


async def test_no_healthy_run_in_the_window_rolls_back_and_the_version_is_refused() -> None:
    device = StandIn(window_s=0.2)
    await device.firmware.boot_new("1.1.0")
    await device.wait_for(lambda: bool(device.sent))
    assert statuses(device) == [("rolled_back", "1.1.0", "1.0.0")]
    assert device.sent[0]["error"] == "no healthy run within 0.2 s"
    assert device.fw_version == "1.0.0"
    assert device.firmware.refuses("1.1.0")
    assert not device.firmware.refuses("1.2.0")
    # The slot left is invalid: nothing to boot back to.
    with pytest.raises(NoPreviousImage, match=r"no previous image to boot: 1\.0\.0"):
        await device.firmware.boot_previous_command({})


async def test_a_rollback_report_that_cannot_be_sent_goes_at_the_next_connect() -> None:
    device = StandIn(window_s=0.2)
    await device.firmware.boot_new("1.1.0")
    device.reachable = False  # the broker goes away before the window ends
    await device.wait_for(lambda: device.fw_version == "1.0.0")
    await asyncio.sleep(0.05)
    assert device.sent == []
    device.reachable = True
    await device.connect()
    await device.wait_for(lambda: bool(device.sent))
    assert statuses(device) == [("rolled_back", "1.1.0", "1.0.0")]
    assert device.firmware.reports == device.sent
    await device.disconnect()


async def test_a_crashing_build_goes_back_at_once() -> None:
    device = StandIn(window_s=5)
    device.firmware.fault = "crash"
    await device.firmware.boot_new("1.1.0")
    assert device.fw_version == "1.0.0"
    assert statuses(device) == [("rolled_back", "1.1.0", "1.0.0")]
    assert device.sent[0]["error"] == "crashed on start"
    assert device.firmware.refuses("1.1.0")


async def test_boot_previous_answers_then_goes_back() -> None:
    device = StandIn(window_s=5)
    await device.firmware.boot_new("1.1.0")
    device.telemetry_acknowledged += 1
    await device.wait_for(lambda: bool(device.sent))
    assert await device.firmware.boot_previous_command({}) == {"from": "1.1.0", "to": "1.0.0"}
    assert device.fw_version == "1.1.0"  # the answer leaves first
    await device.wait_for(lambda: len(device.sent) == 2)
    assert statuses(device)[-1] == ("rolled_back", "1.1.0", "1.0.0")
    assert device.sent[-1]["error"] == "ota.boot_previous command"
    assert device.fw_version == "1.0.0"
