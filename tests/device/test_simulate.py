"""`paku-iot simulate`: a fleet of real MQTT devices against a running `paku-iot dev`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from paku_iot.device.simulate import fails_new_build
from tests.support import eventually
from tests.support.cli import cli
from tests.support.processes import dev_environment, paku, read_until, stop


async def test_a_simulated_fleet_sends_telemetry_and_answers_commands(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    saved = tmp_path / "fleet.csv"
    run = await cli(
        env,
        tmp_path,
        "simulate",
        "--devices",
        "4",
        "--rate",
        "20",
        "--duration",
        "3",
        "--save",
        str(saved),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "simulating 4 devices" in run.stdout
    assert "connected 4" in run.stdout
    assert oct(saved.stat().st_mode & 0o777) == "0o600"

    listed = json.loads((await cli(env, tmp_path, "devices", "list", "--json")).stdout)
    assert len(listed) == 4
    token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()
    base = f"http://127.0.0.1:{env['PAKU_HTTP_PORT']}"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        total = 0
        for device in listed:
            items = (await api.get(f"/devices/{device['id']}/telemetry")).json()["items"]
            assert items, device["id"]
            assert {"temp", "hum", "n", "ts"} <= set(items[0]["payload"])
            total += len(items)
        assert 30 <= total <= 80  # 20 msgs/s for about 3 s

    # The same fleet again, from the saved credentials.
    again = await cli(
        env, tmp_path, "simulate", "--credentials", str(saved), "--rate", "8", "--duration", "1"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "connected 4" in again.stdout


async def test_dev_runs_a_demo_fleet(tmp_path: Path) -> None:
    env, http_port, _ = dev_environment(tmp_path)
    server = paku("dev", "--simulate", "3", "--simulate-rate", "6", env=env, cwd=tmp_path)
    assert server.stdout is not None
    try:
        read_until(server.stdout, "Press Ctrl-C")
        token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {token}"}
        ) as api:

            async def fleet_online() -> None:
                devices = (await api.get("/devices", params={"model": "simulated"})).json()
                assert len(devices["items"]) == 3
                assert all(d["online"] for d in devices["items"])
                assert all(d["lastSeenAt"] for d in devices["items"])

            await eventually(fleet_online, timeout=20)
    finally:
        code, stderr = stop(server)
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def test_the_simulated_fleet_takes_a_firmware_update(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    saved = tmp_path / "fleet.csv"
    first = await cli(
        env, tmp_path, "simulate", "--devices", "3", "--rate", "6", "--duration", "1",
        "--ota-check", "0", "--save", str(saved),
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fsimulated firmware image" * 4096)
    published = await cli(
        env, tmp_path, "ota", "publish", str(firmware), "--model", "simulated",
        "--version", "1.1.0", "--json",
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr

    run = await cli(
        env, tmp_path, "simulate", "--credentials", str(saved), "--rate", "6",
        "--duration", "6", "--ota-check", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "updates 3" in run.stdout.splitlines()[-1], run.stdout

    listed = json.loads((await cli(env, tmp_path, "devices", "list", "--json")).stdout)
    assert sorted(d["fwVersion"] for d in listed) == ["1.1.0"] * 3
    status = await cli(env, tmp_path, "ota", "status", json.loads(published.stdout)["id"])
    assert "confirmed 3" in status.stdout, status.stdout


async def test_a_share_of_the_simulated_fleet_fails_the_new_build_and_rolls_back(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()
    base = f"http://127.0.0.1:{env['PAKU_HTTP_PORT']}"
    ids = [f"sim-{n}" for n in range(6)]
    failing = {device_id for device_id in ids if fails_new_build(device_id, 0.5)}
    assert failing == {"sim-0", "sim-4", "sim-5"}  # the hash's choice: fixed, so reproducible
    saved = tmp_path / "fleet.csv"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        rows = ["username,password"]
        for device_id in ids:
            made = await api.post("/devices", json={"id": device_id, "model": "simulated"})
            assert made.status_code == 201, made.text
            rows.append(f"{device_id},{made.json()['credentials']['password']}")
        saved.write_text("\n".join(rows) + "\n")
        firmware = tmp_path / "fw.bin"
        firmware.write_bytes(b"\x7fsimulated firmware image" * 4096)
        published = await cli(
            env, tmp_path, "ota", "publish", str(firmware), "--model", "simulated",
            "--version", "1.1.0", "--json",
        )  # fmt: skip
        assert published.returncode == 0, published.stdout + published.stderr
        release_id = json.loads(published.stdout)["id"]

        run = await cli(
            env, tmp_path, "simulate", "--credentials", str(saved), "--rate", "12",
            "--duration", "9", "--ota-check", "1", "--fail-share", "0.5",
            "--confirm-window", "2", "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        summary = json.loads(run.stdout.splitlines()[-1])
        assert summary["updatesInstalled"] == 6, summary
        assert summary["updatesConfirmed"] == 3, summary
        assert summary["updatesRolledBack"] == 3, summary

        listed = json.loads((await cli(env, tmp_path, "devices", "list", "--json")).stdout)
        running = {d["id"]: d["fwVersion"] for d in listed}
        assert running == {i: "1.0.0" if i in failing else "1.1.0" for i in ids}

        async def rolled_back() -> None:
            rollout = (await api.get(f"/ota/releases/{release_id}")).json()["rollout"]
            assert set(rollout["devices"]["rolled_back"]) == failing, rollout
            assert set(rollout["devices"]["confirmed"]) == set(ids) - failing, rollout

        await eventually(rolled_back)
        events = (await api.get("/devices/sim-0/events", params={"type": "ota"})).json()
        last = events["items"][0]["payload"]
        assert (last["status"], last["version"], last["runningVersion"]) == (
            "rolled_back",
            "1.1.0",
            "1.0.0",
        )
