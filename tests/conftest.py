"""Fixtures that run real services: a Mosquitto per test on a free port with the project's
generated config, PostgreSQL databases made from a migrated template, SQLite files, the
service in process, and a `paku-iot serve` and a `paku-iot dev` of the test's own. The helpers
they use are in tests/support."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from paku_iot.server.service import Service, running_service
from paku_iot.settings import Settings
from paku_iot.storage.migrate import upgrade
from tests.support import ADMIN_TOKEN, require
from tests.support.api import admin_api
from tests.support.broker import Broker, start_broker
from tests.support.postgres import PG_ADMIN_DSN, pg_admin, pg_dsn
from tests.support.processes import dev_environment, paku, read_until, stop
from tests.support.served import Served, serve

PG_TEMPLATE = f"paku_template_{os.getpid()}"
TESTS = Path(__file__).parent

# ---- running in parallel ------------------------------------------------------------------
# pytest-xdist runs the suite in worker processes (pyproject's addopts: `-n`, `--dist
# loadgroup`). Every fixture is private to its test (free ports, tmp_path, its own database;
# the PostgreSQL template is per worker, named by pid), so tests may run side by side, except
# the groups below, each of which runs in one worker, one test after another:
# - "docker": the compose stacks on the one Docker engine (tests/containers/);
# - "soak": the long load and fault runs (`make soak`), each meant to have the machine;
# - "faults": tests/faults/, which time recovery under load of their own and share one
#   private PostgreSQL cluster per worker.


def serial_group(item: pytest.Item) -> str | None:
    if item.get_closest_marker("docker"):
        return "docker"
    if item.get_closest_marker("soak"):
        return "soak"
    if item.path.is_relative_to(TESTS / "faults"):
        return "faults"
    return None


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers it too; here so that `-p no:xdist` keeps --strict-markers happy.
    config.addinivalue_line("markers", "xdist_group(name): run the group in one xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = serial_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _in_its_group(request: pytest.FixtureRequest) -> None:
    """In a worker of `--dist loadgroup`: pytest-xdist groups tests by a suffix it appends to
    their node ids, which pytest 9.2 no longer takes (pytest-xdist#1386; pyproject pins pytest
    below it). A test of a group that did not get its suffix is not run at all, rather than
    run beside the others of its group unnoticed."""
    group = serial_group(request.node)
    if group is None or not getattr(request.config.option, "loadgroup", False):
        return  # `loadgroup` is set in xdist workers only
    if not request.node.nodeid.endswith(f"@{group}"):
        pytest.fail(
            f"pytest-xdist did not put this test in its group {group!r}: this pytest and "
            "pytest-xdist do not work together for --dist loadgroup (pytest-xdist#1386)",
            pytrace=False,
        )


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


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per session; each test copies it (fast) and drops its copy."""
    try:
        asyncio.run(pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}")
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}"))
    asyncio.run(pg_admin(f"CREATE DATABASE {PG_TEMPLATE}"))
    upgrade(pg_dsn(PG_TEMPLATE))
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
    yield pg_dsn(name)
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session (per worker); each test copies the file."""
    path = tmp_path_factory.mktemp("sqlite-template") / "paku.db"
    upgrade(f"sqlite:///{path}")
    # Closed cleanly, all of it is in the one file: no -wal or -journal beside it.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each kind: the same tests run on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "paku.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"paku_test_{secrets.token_hex(6)}"
    asyncio.run(pg_admin(f"CREATE DATABASE {name} TEMPLATE {template}"))
    yield pg_dsn(name)
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


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
        mqtt_backend_port=broker.backend_port,
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
    async with admin_api(service) as client:
        yield client


@pytest.fixture
def served(tmp_path: Path, database_url: str, broker: Broker) -> Iterator[Served]:
    """A `paku-iot serve` process of the test's own (uvicorn on a free port)."""
    with serve(tmp_path, database_url, broker) as running:
        yield running


@pytest.fixture
async def dev_api(tmp_path: Path) -> AsyncIterator[tuple[dict[str, str], int]]:
    """A `paku-iot dev` of the test's own, running: its environment and its MQTT port."""
    env, _, mqtt_port = dev_environment(tmp_path)
    server = paku("dev", env=env, cwd=tmp_path)
    assert server.stdout is not None
    try:
        await asyncio.to_thread(read_until, server.stdout, "Press Ctrl-C")
        yield env, mqtt_port
    finally:
        code, stderr = stop(server)
        assert code == 0, stderr
