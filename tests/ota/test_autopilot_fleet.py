"""The OTA autopilot with nobody's hand on it, end to end on both databases: `paku-iot dev`
(real Mosquitto, the collector, the API and the autopilot) on SQLite or PostgreSQL, a
release published with a plan by the `ota` CLI, and `paku-iot simulate`, whose devices check
the manifest, install, and confirm the new build after a healthy run or roll back
(`--fail-share`). The test only watches the release through the API, then sends one
`ota.boot_previous` command."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paku_iot.device.simulate import fails_new_build
from paku_iot.ota.rollout import in_rollout
from paku_iot.protocol import OTA_BOOT_PREVIOUS_COMMAND
from tests.support import eventually
from tests.support.processes import paku, stop
from tests.test_ota_flow import MODEL, Dev, running_dev

# The autopilot looks every half second instead of every 5: the soak times below are short.
AUTOPILOT_INTERVAL_S = "0.5"


@pytest.fixture
async def fleet_dev(tmp_path: Path, database_url: str) -> AsyncIterator[Dev]:
    async with running_dev(
        tmp_path,
        PAKU_DATABASE_URL=database_url,
        PAKU_OTA_AUTOPILOT_INTERVAL_S=AUTOPILOT_INTERVAL_S,
    ) as started:
        yield started


def pick(count: int, wanted: Callable[[str], bool]) -> list[str]:
    """The first `count` device ids of the form fleet-NNN that `wanted` keeps: which wave a
    device falls in (and whether it fails the build) is a hash of its id, so the test chooses
    ids that give every wave devices of its own."""
    chosen = [d for d in (f"fleet-{n:03d}" for n in range(2000)) if wanted(d)][:count]
    assert len(chosen) == count
    return chosen


def in_wave(low: int, high: int) -> Callable[[str], bool]:
    """Devices added by a wave at `high` percent to one at `low`."""
    return lambda d: in_rollout(d, high) and not in_rollout(d, low)


async def provision_all(dev: Dev, ids: list[str]) -> Path:
    rows = ["username,password"]
    for device_id in ids:
        rows.append(f"{device_id},{await dev.provision(device_id)}")
    saved = dev.cwd / "fleet.csv"
    saved.write_text("\n".join(rows) + "\n")
    saved.chmod(0o600)
    return saved


async def publish_with_plan(dev: Dev, plan: list[dict[str, int]], *options: str) -> str:
    firmware = dev.cwd / "firmware-1.1.0.bin"
    firmware.write_bytes(os.urandom(50_000))
    release = await dev.cli(
        "ota", "publish", str(firmware), "--model", MODEL, "--version", "1.1.0",
        "--plan", json.dumps(plan), *options,
    )  # fmt: skip
    assert (release["state"], release["currentWave"]) == ("rolling", 1), release
    release_id: str = release["id"]
    return release_id


@contextlib.contextmanager
def simulated_fleet(dev: Dev, credentials: Path, *options: str) -> Iterator[None]:
    """`paku-iot simulate` on the fleet's credentials until the block ends: each device
    checks for an update every second and sends telemetry twice a second."""
    devices = len(credentials.read_text().splitlines()) - 1
    process = paku(
        "simulate", "--credentials", str(credentials), "--model", MODEL,
        "--rate", str(2 * devices), "--ota-check", "1", "--duration", "300",
        "--url", dev.base_url, *options,
        env={**dev.env, "PAKU_ADMIN_TOKEN": dev.token},
        cwd=dev.cwd,
    )  # fmt: skip
    try:
        yield
    finally:
        code, stderr = stop(process)
        assert "Traceback" not in stderr, stderr
        assert code in (0, -2, 130), (code, stderr)  # ended by the SIGINT above


async def release_of(api: httpx.AsyncClient, release_id: str) -> dict[str, Any]:
    response = await api.get(f"/ota/releases/{release_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def timeline(api: httpx.AsyncClient, release_id: str) -> list[tuple[str, str]]:
    items = (await api.get(f"/ota/releases/{release_id}/timeline")).json()["items"]
    return [(e["kind"], e["actor"]) for e in items]


async def running_versions(api: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    listed = (await api.get("/devices", params={"model": MODEL, "limit": 1000})).json()
    return {d["id"]: d["fwVersion"] for d in listed["items"] if d["id"] in ids}


async def test_a_healthy_release_rolls_out_through_every_wave_by_itself(
    fleet_dev: Dev,
) -> None:
    plan = [
        {"percent": 30, "soakSeconds": 6},
        {"percent": 60, "soakSeconds": 6},
        {"percent": 100, "soakSeconds": 0},
    ]
    waves = [pick(2, in_wave(0, 30)), pick(2, in_wave(30, 60)), pick(2, in_wave(60, 100))]
    ids = [d for wave in waves for d in wave]
    credentials = await provision_all(fleet_dev, ids)
    release_id = await publish_with_plan(fleet_dev, plan)

    async with fleet_dev.admin() as api:
        with simulated_fleet(fleet_dev, credentials, "--confirm-window", "20"):

            async def completed_and_all_confirmed() -> dict[str, Any]:
                body = await release_of(api, release_id)
                assert body["state"] == "completed", body
                assert sorted(body["rollout"]["devices"]["confirmed"]) == sorted(ids), body
                return body

            body = await eventually(completed_and_all_confirmed, timeout=90)
            assert (body["currentWave"], body["rolloutPercent"]) == (3, 100)
            assert body["rollout"]["counts"]["failed"] == 0
            assert body["rollout"]["counts"]["rolled_back"] == 0
            # Every step was the autopilot's, wave after wave.
            assert await timeline(api, release_id) == [
                ("plan", "admin"),
                ("promoted", "autopilot"),
                ("promoted", "autopilot"),
                ("completed", "autopilot"),
            ]
            items = (await api.get(f"/ota/releases/{release_id}/timeline")).json()["items"]
            # Each promotion counted the confirmations of the wave it left behind.
            first, second = items[1]["detail"], items[2]["detail"]
            assert first["counts"]["confirmed"] >= 1, first
            assert second["counts"]["confirmed"] >= first["counts"]["confirmed"] + 1, second
            assert await running_versions(api, ids) == dict.fromkeys(ids, "1.1.0")


async def test_a_release_failing_on_a_fifth_of_the_fleet_is_aborted_in_its_first_wave(
    fleet_dev: Dev,
) -> None:
    share = 0.2

    def group(first: bool, fails: bool) -> Callable[[str], bool]:
        return lambda d: in_rollout(d, 50) == first and fails_new_build(d, share) == fails

    # A fifth of each: one failing device of five in the first wave, and the same outside.
    first_wave = pick(1, group(first=True, fails=True)) + pick(4, group(first=True, fails=False))
    others = pick(1, group(first=False, fails=True)) + pick(4, group(first=False, fails=False))
    ids = first_wave + others
    bad = first_wave[0]
    credentials = await provision_all(fleet_dev, ids)
    # The first wave soaks for ten minutes: only an abort ends it within the test.
    plan = [{"percent": 50, "soakSeconds": 600}, {"percent": 100, "soakSeconds": 0}]
    release_id = await publish_with_plan(
        fleet_dev, plan, "--abort-failure-percent", "15", "--abort-min-devices", "3"
    )

    async with fleet_dev.admin() as api:
        with simulated_fleet(
            fleet_dev, credentials, "--fail-share", str(share), "--confirm-window", "3"
        ):

            async def aborted() -> dict[str, Any]:
                body = await release_of(api, release_id)
                assert body["state"] == "aborted", body
                return body

            body = await eventually(aborted, timeout=60)
            assert body["currentWave"] == 1
            assert body["stateReason"].startswith("wave 1: 1 of "), body["stateReason"]
            assert body["stateReason"].endswith("failed, abort at 15%"), body["stateReason"]
            assert await timeline(api, release_id) == [
                ("plan", "admin"),
                ("aborted", "autopilot"),
            ]

            async def settled() -> None:
                # The bad build's device rolled back; the others of the wave confirmed (the
                # release is aborted under them, so they stay listed as on it).
                devices = (await release_of(api, release_id))["rollout"]["devices"]
                assert devices["rolled_back"] == [bad], devices
                assert sorted(devices["confirmed"]) == sorted(first_wave[1:]), devices

            await eventually(settled, timeout=30)
            versions = await running_versions(api, ids)
            assert versions[bad] == "1.0.0"  # back on the old version by itself
            # Nobody outside the first wave was offered it, before or after the abort.
            assert {versions[d] for d in others} == {"1.0.0"}
            for device_id in others:
                events = await api.get(f"/devices/{device_id}/events", params={"type": "ota"})
                assert events.json()["items"] == [], device_id
            manifest = await api.get("/ota/manifest.json", params={"model": MODEL})
            assert manifest.json() == []

            # Boot previous: an operator sends one of the wave's devices back to 1.0.0.
            returned = first_wave[1]
            command = await fleet_dev.command(returned, OTA_BOOT_PREVIOUS_COMMAND)
            assert command["status"] == "acked", command
            assert command["result"] == {"from": "1.1.0", "to": "1.0.0"}

            async def back_on_the_old_version() -> None:
                assert (await running_versions(api, [returned]))[returned] == "1.0.0"
                devices = (await release_of(api, release_id))["rollout"]["devices"]
                assert sorted(devices["rolled_back"]) == sorted([bad, returned]), devices

            await eventually(back_on_the_old_version, timeout=20)
