"""The real entry points as a user runs them: `paku-iot dev`, and `paku-iot serve` against
a Mosquitto started from `paku-iot broker-config`, each in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from paku_iot.broker.process import find_mosquitto
from tests.support import eventually, free_port, require, wait_for_port_sync
from tests.support.mqtt import DeviceClient
from tests.support.processes import (
    dev_environment,
    device_round_trip,
    paku,
    read_until,
    run_paku,
    stop,
    stored_telemetry,
)

TOKEN = "process-test-token-0123456789abcdef"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


@pytest.fixture
def external_broker(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A Mosquitto paku-iot did not start: configured by `broker-config`, run by hand."""
    try:
        binary = find_mosquitto(None)
    except Exception as exc:
        require(False, str(exc))
        raise
    port = free_port()
    ports = {"PAKU_MQTT_PORT": str(port), "PAKU_MQTT_BACKEND_PORT": str(free_port())}
    broker_dir = tmp_path / "broker"
    result = run_paku(
        "broker-config",
        "--out",
        str(broker_dir),
        env=ports,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"mosquitto -c {broker_dir / 'mosquitto.conf'}" in result.stdout
    assert oct((broker_dir / "backend-password").stat().st_mode & 0o777) == "0o600"
    broker = subprocess.Popen(
        [binary, "-c", str(broker_dir / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for_port_sync(port)
    yield broker_dir, ports
    broker.terminate()
    broker.wait(10)


async def test_serve_on_postgresql_with_an_external_broker(
    tmp_path: Path, external_broker: tuple[Path, dict[str, str]], empty_pg_database: str
) -> None:
    broker_dir, ports = external_broker
    http_port = free_port()
    env = {
        "PAKU_DATABASE_URL": empty_pg_database,
        "PAKU_BROKER_DIR": str(broker_dir),
        **ports,
        "PAKU_HTTP_PORT": str(http_port),
        "PAKU_ADMIN_TOKEN": TOKEN,
        "PAKU_DATA_DIR": str(tmp_path / "data"),
        "PAKU_INSTANCE_ID": "serve-test",
    }
    not_migrated = run_paku("serve", env=env, cwd=tmp_path)
    assert not_migrated.returncode == 1
    assert "run `paku-iot migrate`" in not_migrated.stderr

    migrated = run_paku("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    server = paku("serve", env=env, cwd=tmp_path)
    base_url = f"http://127.0.0.1:{http_port}"
    try:

        async def healthy() -> None:
            async with httpx.AsyncClient() as client:
                try:
                    response = await client.get(f"{base_url}/health")
                except httpx.TransportError as exc:
                    raise AssertionError(str(exc)) from None
                assert response.status_code == 200, response.text

        await eventually(healthy, timeout=30)
        await device_round_trip(base_url, int(ports["PAKU_MQTT_PORT"]), "ext-1", TOKEN)
    finally:
        code, stderr = stop(server, signal.SIGTERM)
    assert code == 0, stderr
    assert "paku-iot stopped" in stderr


async def test_dev_runs_everything_and_comes_back_with_the_same_data(tmp_path: Path) -> None:
    env, http_port, mqtt_port = dev_environment(tmp_path)
    base_url = f"http://127.0.0.1:{http_port}"

    first = paku("dev", env=env, cwd=tmp_path)
    assert first.stdout is not None
    banner = read_until(first.stdout, "Press Ctrl-C")
    token_file = tmp_path / "var" / "secrets" / "admin-token"
    token = token_file.read_text().strip()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token in banner
    assert base_url in banner
    assert f"mqtt://127.0.0.1:{mqtt_port}" in banner
    broker_pid = int((tmp_path / "var" / "broker" / "mosquitto.pid").read_text())
    assert pid_alive(broker_pid)
    try:
        password = await device_round_trip(base_url, mqtt_port, "dev-1", token)
    finally:
        code, stderr = stop(first)
    assert code == 0, stderr
    assert not pid_alive(broker_pid), "Ctrl-C must stop the broker too"

    second = paku("dev", env=env, cwd=tmp_path)
    assert second.stdout is not None
    try:
        banner = read_until(second.stdout, "Press Ctrl-C")
        assert token in banner  # same secrets
        device = await DeviceClient("127.0.0.1", mqtt_port, "dev-1", password).connect()
        await device.disconnect()  # same registry, same credentials
        items = await stored_telemetry(base_url, "dev-1", token)
        assert len(items) == 1  # same data
    finally:
        code, stderr = stop(second)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "ERROR" not in stderr


async def test_dev_names_the_setting_for_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PAKU_DATA_DIR": str(tmp_path / "var"),
            "PAKU_HTTP_PORT": str(free_port()),
            "PAKU_MQTT_PORT": str(taken.getsockname()[1]),
        }
        result = await asyncio.to_thread(run_paku, "dev", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "PAKU_MQTT_PORT" in result.stderr
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


async def test_dev_honours_a_postgresql_url(tmp_path: Path, empty_pg_database: str) -> None:
    env, http_port, mqtt_port = dev_environment(tmp_path)
    env |= {"PAKU_DATABASE_URL": empty_pg_database, "PAKU_ADMIN_TOKEN": TOKEN}
    dev = paku("dev", env=env, cwd=tmp_path)
    assert dev.stdout is not None
    try:
        banner = read_until(dev.stdout, "Press Ctrl-C")
        assert "postgresql+asyncpg://" in banner
        assert "(from PAKU_ADMIN_TOKEN)" in banner
        await device_round_trip(f"http://127.0.0.1:{http_port}", mqtt_port, "pg-1", TOKEN)
    finally:
        code, stderr = stop(dev)
    assert code == 0, stderr
    conn = await asyncpg.connect(empty_pg_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM telemetry WHERE device_id = 'pg-1'") == 1
    finally:
        await conn.close()
    assert not (tmp_path / "var" / "paku.db").exists()


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    url = f"postgresql://paku:secret@127.0.0.1:{free_port()}/paku"
    for command in ("migrate", "serve"):
        result = run_paku(
            command, env={"PAKU_DATABASE_URL": url, "PAKU_MQTT_PASSWORD": "x"}, cwd=tmp_path
        )
        assert result.returncode == 1, result.stderr
        assert "cannot reach the database" in result.stderr
        assert "secret" not in result.stderr  # the password is never printed
        assert "Traceback" not in result.stderr
