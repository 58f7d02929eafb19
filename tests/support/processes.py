"""`paku-iot` as a user runs it: commands as child processes of the test (`paku-iot dev`,
`serve`, `broker-config`, ...), and what a test does against the HTTP API they serve."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from paku_iot.broker.process import find_mosquitto
from tests.support import eventually, free_port, require
from tests.support.mqtt import DeviceClient


def paku(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "paku_iot", *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_paku(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paku_iot", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_until(stream: IO[str], marker: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never appeared; output so far:\n{seen}")


def stop(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"did not stop on {sig}:\n{stderr}") from None
    return process.returncode, stderr


async def provision(base_url: str, device_id: str, token: str) -> str:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        response = await client.post("/devices", json={"model": "m", "id": device_id})
        assert response.status_code == 201, response.text
        password: str = response.json()["credentials"]["password"]
        return password


async def stored_telemetry(base_url: str, device_id: str, token: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        response = await client.get(f"/devices/{device_id}/telemetry")
        assert response.status_code == 200, response.text
        items: list[dict[str, object]] = response.json()["items"]
        return items


async def device_round_trip(base_url: str, mqtt_port: int, device_id: str, token: str) -> str:
    password = await provision(base_url, device_id, token)
    device = await DeviceClient("127.0.0.1", mqtt_port, device_id, password).connect()
    sample = {"ts": int(time.time() * 1000), "v": 7}  # recent: within any retention
    assert await device.publish(f"paku/{device_id}/telemetry", json.dumps(sample)) == 0
    await device.disconnect()

    async def stored() -> None:
        items = await stored_telemetry(base_url, device_id, token)
        assert [i["payload"] for i in items] == [sample]

    await eventually(stored)
    return password


def dev_environment(tmp_path: Path) -> tuple[dict[str, str], int, int]:
    """Settings for a `paku-iot dev` of the test's own: data in tmp_path, free ports."""
    try:
        find_mosquitto(None)
    except Exception as exc:
        require(False, str(exc))
    http_port, mqtt_port = free_port(), free_port()
    env = {
        "PAKU_DATA_DIR": str(tmp_path / "var"),
        "PAKU_HTTP_PORT": str(http_port),
        "PAKU_MQTT_PORT": str(mqtt_port),
        "PAKU_MQTT_BACKEND_PORT": str(free_port()),
    }
    return env, http_port, mqtt_port


def run_script(
    path: Path, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A shell script of the project (scripts/backup.sh, ...) with bash, `env` on top of
    this process's environment."""
    return subprocess.run(
        [shutil.which("bash") or "bash", str(path), *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
