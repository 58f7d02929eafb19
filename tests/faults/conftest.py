"""Fixtures for the fault tests: deployments run as real processes, a PostgreSQL cluster of
the tests' own (so it can be stopped without touching the machine's shared one), and a
small filesystem that can be filled."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from paku_iot.storage.migrate import upgrade
from tests.support import require
from tests.support.broker import Broker
from tests.support.faults import (
    Deployment,
    MakeDeployment,
    PrivateCluster,
    SmallDisk,
    running_cluster,
    sqlite_url,
)


@pytest.fixture
def make_deployment(tmp_path: Path, broker: Broker) -> Iterator[MakeDeployment]:
    """Builds the test's deployment on its broker; stops whatever processes it started."""
    made: list[Deployment] = []

    def make(database_url: str, data_dir: Path | None = None) -> Deployment:
        deployment = Deployment(
            root=tmp_path,
            broker=broker,
            database_url=database_url,
            data_dir=data_dir or tmp_path / "data",
        )
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop_all()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    """A migrated SQLite database in the test's data dir."""
    path = tmp_path / "data" / "paku.db"
    sqlite_url(path)
    return path


# ---- a PostgreSQL cluster of our own --------------------------------------------------------


@pytest.fixture(scope="session")
def _pg_cluster() -> Iterator[PrivateCluster]:
    # Not under tmp_path: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="paku-faults-pg-"))
    try:
        with running_cluster(root) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_pg(_pg_cluster: PrivateCluster) -> PrivateCluster:
    """The tests' own PostgreSQL, running (a test may have left it stopped)."""
    if not _pg_cluster.running:
        _pg_cluster.start()
    return _pg_cluster


@pytest.fixture
def private_pg_url(private_pg: PrivateCluster) -> str:
    """A migrated database on the private cluster."""
    url = asyncio.run(private_pg.create_database())
    upgrade(url)
    return url


# ---- a disk that fills --------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """A tmpfs of 64 MiB mounted for the test (needs root, as in CI). A PostgreSQL cluster
    takes ~40 MiB of it. Mounted outside tmp_path, where the postgres user can reach it."""
    mount_point = Path(tempfile.mkdtemp(prefix="paku-faults-disk-"))
    size = 64 << 20
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        mount_point.rmdir()
    require(result.returncode == 0, f"cannot mount a small filesystem: {result.stderr.strip()}")
    try:
        yield SmallDisk(mount_point, size)
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


@pytest.fixture
def pg_on_small_disk(small_disk: SmallDisk) -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of its own whose data lives on the small disk."""
    with running_cluster(small_disk.path / "pg") as cluster:
        yield cluster
