"""What every benchmark needs: a Mosquitto with the project's config, a fresh database,
devices, and readings of a process's memory and CPU from /proc."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from paku_iot.broker.files import BrokerOptions
from paku_iot.broker.process import find_mosquitto
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.server.service import Role, running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from paku_iot.storage.migrate import upgrade

PG_ADMIN = os.environ.get("PAKU_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _proc_kib(pid: int, file: str, field: str) -> float:
    """A `<field>: <n> kB` line of /proc/<pid>/<file>, in MiB; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/{file}").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: resident memory with shared pages split between processes."""
    return _proc_kib(pid, "smaps_rollup", "Pss:")


def rss_mib(pid: int) -> float:
    return _proc_kib(pid, "status", "VmRSS:")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def raise_fd_limit() -> None:
    """Thousands of connections need thousands of descriptors, in Mosquitto (which inherits
    this limit) and in the load generator."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Stack:
    work: Path
    db: str
    url: str
    mqtt_port: int
    backend_port: int
    broker: subprocess.Popen[bytes]
    settings: Settings

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a `paku-iot serve` process needs to join this stack."""
        return {
            **os.environ,
            "PAKU_DATABASE_URL": self.url,
            "PAKU_MQTT_PORT": str(self.mqtt_port),
            "PAKU_MQTT_BACKEND_PORT": str(self.backend_port),
            "PAKU_ADMIN_TOKEN": "bench-token-" + "x" * 24,
            "PAKU_DATA_DIR": str(self.work / "data"),
            "PAKU_BROKER_DIR": str(self.settings.broker_dir),
            "PAKU_LOG_LEVEL": "WARNING",
            "PAKU_TELEMETRY_RETENTION_DAYS": "0",
            **extra,
        }


@asynccontextmanager
async def stack(db: str, work: Path) -> AsyncIterator[Stack]:
    """Mosquitto (the project's generated config, persistence on) and a migrated database."""
    raise_fd_limit()
    name = ""
    if db == "postgresql":
        name = f"paku_bench_{secrets.token_hex(4)}"
        await pg(f"CREATE DATABASE {name}")
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{work / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    port, backend_port = free_port(), free_port()
    paths = prepare_broker_dir(
        work / "broker",
        BrokerOptions("127.0.0.1", port, backend_port, BACKEND_MQTT_USERNAME, 65536, 2_000_000),
    )
    broker = subprocess.Popen(
        [find_mosquitto(None), "-c", str(paths.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    settings = Settings(
        data_dir=work / "data",
        database_url=url,
        mqtt_port=port,
        mqtt_backend_port=backend_port,
        broker_dir=paths.root,
        admin_token="bench-token-" + "x" * 24,
        instance_id=f"bench-{secrets.token_hex(3)}",
        telemetry_retention_days=0,
        log_level="WARNING",
    )
    try:
        yield Stack(work, db, url, port, backend_port, broker, settings)
    finally:
        broker.terminate()
        broker.wait()
        if name:
            await pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def provision(settings: Settings, count: int, prefix: str, out: Path) -> Path:
    """Provision `count` devices through the registry (so the broker's password file gets
    them) and write their credentials as JSON for the load generator."""
    creds: list[tuple[str, str]] = []
    async with running_service(settings, frozenset({Role.API})) as service:
        # A few at a time: the password file is rewritten once per burst, not per device.
        for start in range(0, count, 50):
            made = await asyncio.gather(
                *(
                    service.registry.provision(model="bench", device_id=f"{prefix}{n:05d}")
                    for n in range(start, min(count, start + 50))
                )
            )
            creds.extend((m.device.id, m.password) for m in made)
    out.write_text(json.dumps(creds))
    await asyncio.sleep(1)  # the broker reloads its password file
    return out


async def run_loadgen(stack: Stack, credentials: Path, *args: str) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(stack.mqtt_port),
        "--credentials",
        str(credentials),
        *args,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result
