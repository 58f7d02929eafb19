"""Fixtures for the fault tests: deployments run as real processes, a PostgreSQL cluster of
the tests' own (so it can be stopped without touching the machine's shared one), and a
small filesystem that can be filled."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from paku_iot.storage.migrate import upgrade
from tests.conftest import Broker
from tests.faults.harness import Deployment, listening_port
from tests.support import require

MakeDeployment = Callable[..., Deployment]


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


def sqlite_url(path: Path) -> str:
    """A migrated SQLite database at `path` (call it from a thread in async code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    """A migrated SQLite database in the test's data dir."""
    path = tmp_path / "data" / "paku.db"
    sqlite_url(path)
    return path


# ---- a PostgreSQL cluster of our own --------------------------------------------------------


def _pg_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@dataclass
class PrivateCluster:
    """A PostgreSQL server in a temporary directory on a free port, trust auth on
    127.0.0.1. Run as the `postgres` user when we are root (PostgreSQL refuses root)."""

    bin_dir: Path
    root: Path
    port: int
    user: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        name = f"paku_fault_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        return self.dsn(name)


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[PrivateCluster]:
    """A new cluster in `root` (an empty or missing directory), started; stopped after."""
    bin_dir = _pg_bin_dir()
    require(bin_dir is not None, "PostgreSQL server binaries (initdb, pg_ctl) not found")
    assert bin_dir is not None
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require(False, "running as root, but there is no `postgres` user to run PostgreSQL")
        user = "postgres"
    root.mkdir(exist_ok=True)
    if user is not None:
        shutil.chown(root, user, user)
    cluster = PrivateCluster(bin_dir, root, listening_port(), user)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running:
            with contextlib.suppress(AssertionError):
                cluster.stop("immediate")


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


@dataclass
class SmallDisk:
    path: Path
    size_bytes: int

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self) -> Path:
        """Write a file until the filesystem has no space left; return it."""
        filler = self.path / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1):
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * chunk):
                        pass
        finally:
            os.close(fd)
        return filler


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
