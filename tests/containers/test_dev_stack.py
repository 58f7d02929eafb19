"""compose/dev.yaml on a real Docker engine, as a user runs it (README, the file's header):
`docker-compose up -d --build` with the published ports moved, every service healthy (the
one-shots exited 0), a device provisioned through the HTTP API with the dev admin token, its
telemetry published with a real MQTT client through the published MQTT port and read back
from the API, a command answered by the reference device, a firmware release published
through the API and installed by the reference device's OTA updater (manifest with its
device credentials, download, SHA-256 and signature checked), a dashboard sign-in with the
dev admin token that lists the device, paku-iot's start line in `docker-compose logs`, the
database as db-init left it (paku-iot connected as paku_app, which owns every table and is no
superuser; paku_grafana reads and cannot write; the superuser refused over the network), every
port published on 127.0.0.1 only, then `down -v`, after which nothing of the project is left.

The engine is started when it is not running (scripts/docker-engine.sh); the official images
are used when present or pullable, local stand-ins otherwise (tests/support/engine.py,
tests/containers/standins/). Without an engine this skips, except in CI (CI=true), where it
fails."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from paku_iot.device import ReferenceDevice
from tests.support import eventually, free_port
from tests.support.compose import environment
from tests.support.downlink import wait_status
from tests.support.mqtt import ConnectRefused, DeviceClient
from tests.support.processes import provision, stored_telemetry
from tests.support.stacks import ComposeProject, default_services, docker, wait_until_ready
from tests.support.ui import sign_in

# The first run builds the stand-ins and the paku-iot image; a cached run takes a minute or two.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]


class Stack(ComposeProject):
    """compose/dev.yaml under a project name of its own, its published ports moved to free
    ones (PAKU_DEV_HTTP_PORT, PAKU_DEV_MQTT_PORT)."""

    def __init__(self) -> None:
        self.http_port = free_port()
        self.mqtt_port = free_port()
        super().__init__(
            "dev",
            {
                **os.environ,
                "PAKU_DEV_HTTP_PORT": str(self.http_port),
                "PAKU_DEV_MQTT_PORT": str(self.mqtt_port),
                "PAKU_DEV_PUBLIC_URL": f"http://localhost:{self.http_port}",
            },
        )


async def telemetry_round_trip(stack: Stack, device_id: str, token: str) -> str:
    """Provision through the API, publish through the published MQTT port, read it back.

    The broker container learns of the new password from its watcher, which compares the
    password file every second (compose/mosquitto/entrypoint.sh): until that reload the
    device is refused, so it tries again for a few seconds, as a device would."""
    base_url = f"http://127.0.0.1:{stack.http_port}"
    password = await provision(base_url, device_id, token)

    async def connected() -> DeviceClient:
        try:
            return await DeviceClient("127.0.0.1", stack.mqtt_port, device_id, password).connect()
        except ConnectRefused as exc:
            raise AssertionError(f"refused: {exc.reason}") from exc

    device = await eventually(connected, timeout=15)
    sample = {"ts": int(time.time() * 1000), "v": 7}
    assert await device.publish(f"paku/{device_id}/telemetry", json.dumps(sample)) == 0
    await device.disconnect()

    async def stored() -> None:
        items = await stored_telemetry(base_url, device_id, token)
        assert [i["payload"] for i in items] == [sample]

    await eventually(stored)
    return password


async def command_round_trip(stack: Stack, device_id: str, password: str, token: str) -> None:
    """The reference device (paku_iot.device) on the published MQTT port answers a command
    sent through the API."""
    device = ReferenceDevice("127.0.0.1", stack.mqtt_port, device_id, password)

    async def blink(params: dict[str, Any]) -> dict[str, Any]:
        return {"blinked": params.get("times", 1)}

    device.on_command("blink", blink)
    await device.connect()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.http_port}",
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            sent = await api.post(
                f"/devices/{device_id}/commands", json={"name": "blink", "params": {"times": 3}}
            )
            assert sent.status_code in (200, 201, 202), sent.text
            done = await wait_status(api, device_id, sent.json()["id"], "acked", timeout=15)
            assert done["result"] == {"blinked": 3}
    finally:
        await device.disconnect()


async def ota_round_trip(
    stack: Stack, device_id: str, password: str, token: str, workdir: Path
) -> None:
    """A release published through the API (`POST /ota/firmware`, multipart), then the
    reference device's OTA updater on the published ports: the manifest with its HTTP Basic
    device credentials, the download from the URL the manifest names (PAKU_PUBLIC_URL),
    size, SHA-256 and signature checked, and the restart into the new version, which the
    release's rollout then counts as updated."""
    base_url = f"http://127.0.0.1:{stack.http_port}"
    firmware = os.urandom(300_000)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        published = await api.post(
            "/ota/firmware",
            data={"model": "m", "version": "1.1.0", "notes": "compose walk-through"},
            files={"file": ("firmware.bin", firmware, "application/octet-stream")},
        )
        assert published.status_code == 201, published.text
        release = published.json()
        assert release["sha256"] == hashlib.sha256(firmware).hexdigest()
        assert release["url"].startswith(f"http://localhost:{stack.http_port}/ota/firmware/")
        key = (await api.get("/ota/public-key")).json()["publicKey"]
        # What a device asks, with its own credentials (not the admin token).
        async with httpx.AsyncClient(base_url=base_url) as anonymous:
            manifest = await anonymous.get(
                "/ota/manifest.json", params={"current": "1.0.0"}, auth=(device_id, password)
            )
        assert manifest.status_code == 200, manifest.text
        assert [(e["version"], e["sha256"]) for e in manifest.json()] == [
            ("1.1.0", release["sha256"])
        ]

        device = ReferenceDevice("127.0.0.1", stack.mqtt_port, device_id, password, model="m")
        await device.connect()
        try:
            assert await device.update_firmware(base_url, key, workdir) == "1.1.0"
            assert device.fw_version == "1.1.0"
            assert (workdir / "firmware-1.1.0.bin").read_bytes() == firmware

            async def updated() -> None:
                shown = await api.get(f"/ota/releases/{release['id']}")
                # Running it: `updated` until its first healthy run confirms it.
                devices = shown.json()["rollout"]["devices"]
                running = devices["updated"] + devices.get("confirmed", [])
                assert device_id in running, shown.text

            await eventually(updated, timeout=15)
        finally:
            await device.disconnect()


async def dashboard_lists(stack: Stack, device_id: str, token: str) -> None:
    """Sign in to the dashboard with the dev admin token, as a browser would (a session
    cookie over plain HTTP on localhost); the fleet page shows the device."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.http_port}") as browser:
        signin = await browser.get("/ui/signin")
        assert signin.status_code == 200, signin.text
        await sign_in(browser, token)
        fleet = await browser.get("/ui/fleet")
        assert fleet.status_code == 200
        assert device_id in fleet.text
        # Signed out, the page is not shown.
        async with httpx.AsyncClient(base_url=str(browser.base_url)) as stranger:
            assert (await stranger.get("/ui/fleet")).status_code in (302, 303, 401)


def psql(stack: Stack, sql: str, *, user: str = "paku", host: str = "") -> tuple[int, str]:
    """psql in the postgres container: as the superuser over its socket (trusted), or as
    another role over the network with the given host (password from PGPASSWORD)."""
    env = {"paku_app": "paku-dev-only", "paku_grafana": "paku-grafana-dev-only"}
    args = ["exec", "-e", f"PGPASSWORD={env.get(user, 'paku-dev-only')}"]
    args += [stack.container("postgres"), "psql", "-U", user, "-d", "paku", "-At", "-c", sql]
    if host:
        args += ["-h", host]
    result = docker(*args)
    return result.returncode, (result.stdout + result.stderr).strip()


def database_roles(stack: Stack) -> None:
    """What db-init (compose/postgres/roles.sh) made, and paku-iot connecting as paku_app."""
    code, users = psql(
        stack,
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'paku' "
        "AND pid <> pg_backend_pid() AND usename IS NOT NULL",
    )
    assert code == 0, users
    assert users.split() == ["paku_app"], users
    code, owners = psql(
        stack,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relkind IN ('r', 'p')",
    )
    assert (code, owners) == (0, "paku_app"), owners
    code, powers = psql(
        stack,
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'paku_app'",
    )
    assert (code, powers) == (0, "f|f|f"), powers
    # Over the network (from the postgres container's own address, not 127.0.0.1): the app
    # role gets in, the superuser has no password any more, Grafana's role only reads.
    address = docker(
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        stack.container("postgres"),
    ).stdout.strip()
    code, out = psql(stack, "SELECT current_user", user="paku_app", host=address)
    assert (code, out) == (0, "paku_app"), out
    code, out = psql(stack, "SELECT 1", user="paku", host=address)
    assert code != 0, out
    assert "password authentication failed" in out, out
    code, out = psql(stack, "SELECT count(*) FROM devices", user="paku_grafana", host=address)
    assert (code, out) == (0, "1"), out
    code, out = psql(stack, "DELETE FROM devices", user="paku_grafana", host=address)
    assert code != 0, out
    assert "read-only" in out or "permission denied" in out, out


def published_on_loopback_only(stack: Stack) -> None:
    for service, port in (("paku-iot", 8000), ("mosquitto", 1883)):
        bound = docker("port", stack.container(service), f"{port}/tcp").stdout.split()
        assert bound, f"{service}: {port} is not published"
        assert all(b.startswith("127.0.0.1:") for b in bound), f"{service}: {bound}"


async def test_the_dev_stack_runs_on_a_real_engine(engine: list[str], tmp_path: Path) -> None:
    stack = Stack()
    admin_token = environment(default_services("dev")["paku-iot"])["PAKU_ADMIN_TOKEN"]
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        up = stack.compose("up", "-d", "--build", timeout=1800)
        timings["up --build"] = time.monotonic() - started
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}\n{up.stderr}"

        started = time.monotonic()
        await wait_until_ready(stack)
        timings["healthy"] = time.monotonic() - started

        started = time.monotonic()
        password = await telemetry_round_trip(stack, "compose-dev-1", admin_token)
        timings["telemetry round trip"] = time.monotonic() - started

        started = time.monotonic()
        await command_round_trip(stack, "compose-dev-1", password, admin_token)
        timings["command round trip"] = time.monotonic() - started

        started = time.monotonic()
        await ota_round_trip(stack, "compose-dev-1", password, admin_token, tmp_path / "ota")
        timings["ota round trip"] = time.monotonic() - started

        started = time.monotonic()
        await dashboard_lists(stack, "compose-dev-1", admin_token)
        timings["dashboard"] = time.monotonic() - started

        logs = stack.compose("logs", "--no-color", "paku-iot")
        assert logs.returncode == 0, logs.stderr
        assert "paku-iot api+collector running (database " in logs.stdout, logs.stdout[-2000:]
        assert "broker mosquitto:1883)" in logs.stdout, logs.stdout[-2000:]

        started = time.monotonic()
        database_roles(stack)
        published_on_loopback_only(stack)
        timings["roles and ports"] = time.monotonic() - started
    except BaseException:
        stack.print_logs()
        raise
    finally:
        started = time.monotonic()
        down = stack.compose("down", "-v", "--remove-orphans")
        timings["down -v"] = time.monotonic() - started
        print("timings:", {step: round(seconds, 1) for step, seconds in timings.items()})
    assert down.returncode == 0, f"docker-compose down failed:\n{down.stdout}\n{down.stderr}"
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
