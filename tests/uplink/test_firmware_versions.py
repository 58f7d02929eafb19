"""Firmware versions as firmware reports them (`v1.2.0`, git describe's `1.2.0-3-gabcdef`):
the state and the OTA manifest read them by one rule, so a device is never offered the
version it runs, whether it says so in its state or in `current`."""

from __future__ import annotations

import base64
import json
import re

import httpx
import pytest

from paku_iot.protocol import FirmwareVersionError, parse_fw_version
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.downlink import provision
from tests.support.mqtt import DeviceClient
from tests.support.uplink import device_view


async def release(api: httpx.AsyncClient, version: str) -> str:
    response = await api.post(
        "/ota/firmware",
        data={"model": "lamp", "version": version},
        files={"file": ("firmware.bin", f"image of {version}".encode())},
    )
    assert response.status_code == 201, response.text
    release_id: str = response.json()["id"]
    return release_id


def as_device(device_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{device_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def offered(api: httpx.AsyncClient, auth: dict[str, str], **params: str) -> list[str]:
    response = await api.get("/ota/manifest.json", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return [entry["version"] for entry in response.json()]


async def report(api: httpx.AsyncClient, device: DeviceClient, device_id: str, fw: str) -> None:
    state = json.dumps({"online": True, "fwVersion": fw})
    assert await device.publish(f"paku/{device_id}/state", state, retain=True) == 0

    async def stored_as_sent() -> None:
        assert (await device_view(api, device_id))["fwVersion"] == fw

    await eventually(stored_as_sent)


async def test_the_manifest_never_offers_the_version_a_device_reports_running(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "fw-1")
    auth = as_device("fw-1", password)
    ids = {v: await release(api, v) for v in ("1.0.0", "1.1.0", "1.2.0")}
    device = await broker.device("fw-1", password).connect()

    # Without `current`, the state's fwVersion is the floor, read by the same rule.
    await report(api, device, "fw-1", "v1.1.0")
    assert await offered(api, auth) == ["1.2.0"]
    assert await offered(api, auth, current="v1.0.0") == ["1.2.0", "1.1.0"]
    # A git-describe build 3 commits after 1.1.0 counts as 1.1.0: never offered 1.1.0 again.
    assert await offered(api, auth, current="1.1.0-3-gabc1234") == ["1.2.0"]
    assert await offered(api, auth, current="v1.2.0-dirty") == []

    await report(api, device, "fw-1", "1.1.0-3-gabc1234-dirty")
    assert await offered(api, auth) == ["1.2.0"]
    await report(api, device, "fw-1", "v1.2.0")
    assert await offered(api, auth) == []
    # And the rollout counts it as running 1.2.0.
    status = (await api.get(f"/ota/releases/{ids['1.2.0']}")).json()["rollout"]
    assert status["devices"]["updated"] == ["fw-1"]

    # A version no rule reads cannot be compared: every release is offered, newest first,
    # so the device can get back onto a known one.
    await report(api, device, "fw-1", "nightly")
    assert await offered(api, auth) == ["1.2.0", "1.1.0", "1.0.0"]

    unreadable = await api.get("/ota/manifest.json", params={"current": "one"}, headers=auth)
    assert unreadable.status_code == 422
    error = unreadable.json()["error"]
    assert error["code"] == "invalid_version"
    assert "v1.4.2" in error["message"]
    assert "1.4.2-3-gabc1234" in error["message"]
    await device.disconnect()


@pytest.mark.parametrize(
    ("reported", "read_as"),
    [
        ("1.4.2", "1.4.2"),
        ("v1.4.2", "1.4.2"),
        ("V1.4.2", "1.4.2"),
        ("2.0.0-rc.1", "2.0.0-rc.1"),
        ("v2.0.0-rc.1+build.7", "2.0.0-rc.1+build.7"),
        ("1.4.2-3-gabc1234", "1.4.2+3.gabc1234"),
        ("v1.4.2-12-g0123456789abcdef-dirty", "1.4.2+12.g0123456789abcdef.dirty"),
        ("v1.4.2-dirty", "1.4.2+dirty"),
        ("2.0.0-rc.1-3-gabc1234", "2.0.0-rc.1+3.gabc1234"),
    ],
)
def test_the_version_forms_firmware_reports(reported: str, read_as: str) -> None:
    assert str(parse_fw_version(reported)) == read_as


def test_build_metadata_does_not_order_versions() -> None:
    # So a git-describe build compares equal to its tag: newer than nothing released before,
    # older than the next release, and never offered the tag itself.
    assert parse_fw_version("1.1.0-3-gabc1234") == parse_fw_version("1.1.0")
    assert parse_fw_version("1.1.0-3-gabc1234") < parse_fw_version("1.1.1-rc.1")


@pytest.mark.parametrize("reported", ["", "1.4", "one", "v", "1.4.2.1", "build-42", "vv1.4.2"])
def test_versions_no_rule_reads(reported: str) -> None:
    with pytest.raises(FirmwareVersionError, match=re.escape("1.4.2-3-gabc1234")):
        parse_fw_version(reported)
