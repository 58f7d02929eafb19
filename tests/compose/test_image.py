"""The paku-iot image, run without a Docker engine: the Dockerfile's CMD and the compose
files' broker-init and migrate steps as plain processes, against PostgreSQL and a Mosquitto
started by compose/mosquitto/entrypoint.sh, with the Dockerfile's HEALTHCHECK command asking
/health."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import eventually, free_port
from tests.support.compose import (
    BROKER_MOUNT,
    COMPOSE_FILES,
    DATA_MOUNT,
    PROD_ENV,
    Dockerfile,
    environment,
    interpolate,
    load_compose,
    parse_dockerfile,
    services,
)
from tests.support.containers import EntrypointBroker, run_command, start_entrypoint, venv_tool
from tests.support.mqtt import DeviceClient
from tests.support.processes import device_round_trip, stop

# The broker-init, migrate and serve steps as the compose files run them, as processes here.
# Container paths map to the test's directories, host names to the loopback.


def container_env(
    service: dict[str, Any], compose_env: dict[str, str], paths: dict[str, Path]
) -> dict[str, str]:
    env = {k: interpolate(v, compose_env) for k, v in environment(service).items()}
    for key, value in env.items():
        for container_path, local in paths.items():
            if value == container_path or value.startswith(container_path + "/"):
                env[key] = str(local) + value.removeprefix(container_path)
    return env


def start_image_command(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [venv_tool(cmd[0]), *cmd[1:]],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_image_healthcheck(
    dockerfile: Dockerfile, http_port: int
) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, with this venv's python for the image's."""
    assert dockerfile.healthcheck[0] == "python"
    return subprocess.run(
        [sys.executable, *dockerfile.healthcheck[1:]],
        env={**os.environ, "PAKU_HTTP_PORT": str(http_port)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
async def test_the_image_command_and_the_start_steps_run_as_plain_processes(
    name: str,
    tmp_path: Path,
    empty_pg_database: str,
    entrypoint_brokers: list[EntrypointBroker],
) -> None:
    compose = services(load_compose(name))
    compose_env = PROD_ENV if name == "prod" else {}
    dockerfile = parse_dockerfile()
    broker = start_entrypoint(tmp_path, shell=["sh"], compose=name)
    entrypoint_brokers.append(broker)
    paths = {BROKER_MOUNT: broker.broker_dir, DATA_MOUNT: tmp_path / "data"}
    http_port = free_port()
    local = {
        "PAKU_DATABASE_URL": empty_pg_database,
        "PAKU_MQTT_HOST": "127.0.0.1",
        "PAKU_MQTT_PORT": str(broker.port),
        "PAKU_MQTT_BACKEND_PORT": str(broker.backend_port),
        "PAKU_HTTP_HOST": "127.0.0.1",
        "PAKU_HTTP_PORT": str(http_port),
    }
    image_env = {
        k: str(paths.get(v, v)) for k, v in dockerfile.env.items() if k.startswith("PAKU_")
    }

    migrate = compose["migrate"]
    migrate_env = {**image_env, **container_env(migrate, compose_env, paths), **local}
    migrated = run_command(migrate["command"], migrate_env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    service = compose["paku-iot"]
    assert "command" not in service, "paku-iot runs the image's CMD"
    serve_env = {**image_env, **container_env(service, compose_env, paths), **local}
    token = serve_env["PAKU_ADMIN_TOKEN"]
    server = start_image_command(dockerfile.cmd, serve_env, tmp_path)
    try:

        async def healthy() -> None:
            assert server.poll() is None, "paku-iot serve exited"
            result = await asyncio.to_thread(run_image_healthcheck, dockerfile, http_port)
            assert result.returncode == 0, result.stderr

        await eventually(healthy, timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            health = await client.get("/health")
            assert health.json()["status"] == "ok"
            if "PAKU_METRICS_TOKEN" in serve_env:  # prod: a scraper's own token
                assert (await client.get("/metrics")).status_code == 401
                metrics_token = serve_env["PAKU_METRICS_TOKEN"]
                scraped = await client.get(
                    "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
                )
                assert scraped.status_code == 200, scraped.text
        password = await device_round_trip(
            f"http://127.0.0.1:{http_port}", broker.port, "img-1", token
        )

        broker.stop()  # the broker goes away: /health says 503, the check fails

        async def unhealthy() -> None:
            result = await asyncio.to_thread(run_image_healthcheck, dockerfile, http_port)
            assert result.returncode != 0

        await eventually(unhealthy, timeout=30)

        # The container restarts: the same directory and port, and paku-iot is healthy again
        # (it reconnects by itself) with the devices it knew.
        broker = start_entrypoint(
            tmp_path, shell=["sh"], compose=name, port=broker.port, backend_port=broker.backend_port
        )
        entrypoint_brokers.append(broker)
        await eventually(healthy, timeout=30)
        device = await DeviceClient("127.0.0.1", broker.port, "img-1", password).connect()
        await device.disconnect()
    finally:
        code, stderr = stop(server, signal.SIGTERM)
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    if serve_env.get("PAKU_LOG_FORMAT") == "json":
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines
        for line in lines:
            assert isinstance(json.loads(line), dict), line
