"""Fixtures that run real services: a Mosquitto per test on a free port with the project's
generated config, PostgreSQL databases made from a migrated template, SQLite files."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from paku_iot.broker.files import BrokerOptions, BrokerPaths
from paku_iot.broker.process import find_mosquitto
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.exceptions import SettingsError
from paku_iot.server.service import Service, running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from paku_iot.storage.migrate import upgrade
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN, DeviceClient, free_port, require, wait_for_port_sync

PG_ADMIN_DSN = os.environ.get("PAKU_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_TEMPLATE = f"paku_template_{os.getpid()}"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the settings they set: no PAKU_* from the shell, no developer .env or
    config.yml from the working tree."""
    for name in list(os.environ):
        if name.startswith("PAKU_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty-config.yml"
    empty.write_text("{}\n")
    monkeypatch.setenv("PAKU_CONFIG_FILE", str(empty))


def _pg_dsn(database: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per session; each test copies it (fast) and drops its copy."""
    try:
        asyncio.run(pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}")
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}"))
    asyncio.run(pg_admin(f"CREATE DATABASE {PG_TEMPLATE}"))
    upgrade(_pg_dsn(PG_TEMPLATE))
    yield PG_TEMPLATE
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)"))


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database with no schema, dropped after the test."""
    try:
        asyncio.run(pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}")
    name = f"paku_test_{secrets.token_hex(6)}"
    asyncio.run(pg_admin(f"CREATE DATABASE {name}"))
    yield _pg_dsn(name)
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each kind: the same tests run on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'paku.db'}"
        upgrade(url)
        yield url
        return
    template = request.getfixturevalue("pg_template")
    name = f"paku_test_{secrets.token_hex(6)}"
    asyncio.run(pg_admin(f"CREATE DATABASE {name} TEMPLATE {template}"))
    yield _pg_dsn(name)
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@dataclass
class Broker:
    host: str
    port: int
    paths: BrokerPaths
    backend_password: str
    process: subprocess.Popen[bytes] | None = None

    def device(self, username: str, password: str, **kwargs: object) -> DeviceClient:
        return DeviceClient(self.host, self.port, username, password, **kwargs)  # type: ignore[arg-type]

    def backend(self) -> DeviceClient:
        return DeviceClient(
            self.host,
            self.port,
            BACKEND_MQTT_USERNAME,
            self.backend_password,
            client_id=f"test-backend-{secrets.token_hex(4)}",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find_mosquitto(None), "-c", str(self.paths.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port_sync(self.port), f"mosquitto did not start; see {self.paths.log_file}"


def mosquitto_binary() -> str:
    try:
        return find_mosquitto(None)
    except SettingsError as exc:
        require(False, exc.message)
        raise


def start_broker(root: Path) -> Broker:
    mosquitto_binary()
    port = free_port()
    paths = prepare_broker_dir(
        root,
        BrokerOptions(
            listen_host="127.0.0.1",
            listen_port=port,
            backend_username=BACKEND_MQTT_USERNAME,
            max_payload_bytes=65_536,
            max_queued_messages=100_000,
        ),
    )
    broker = Broker("127.0.0.1", port, paths, paths.backend_password.read_text().strip())
    broker.start()
    return broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Our own Mosquitto, configured by `prepare_broker_dir`, never the system one."""
    started = start_broker(tmp_path / "broker")
    yield started
    started.stop()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, broker: Broker) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        broker_dir=broker.paths.root,
        admin_token=ADMIN_TOKEN,
        instance_id=f"test-{secrets.token_hex(4)}",
        ingest_linger_ms=2,
        # Tests send samples from fixed past dates; retention is tested on its own.
        telemetry_retention_days=0,
        events_retention_days=0,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async with running_service(settings) as running:
        deadline = asyncio.get_running_loop().time() + 10
        while not running.link.ready:
            assert asyncio.get_running_loop().time() < deadline, "collector never subscribed"
            await asyncio.sleep(0.02)
        yield running


@pytest.fixture
async def api(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API of the running service, authenticated as admin."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)),
        base_url="http://paku.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client
