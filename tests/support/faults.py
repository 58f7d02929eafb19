"""What the fault tests drive: paku-iot as real `paku-iot serve` processes, a fleet of real
MQTT devices that remembers which messages the broker acknowledged, a TCP proxy that can
cut a device's network, a PostgreSQL cluster of the tests' own (so it can be stopped without
touching the machine's shared one), and a small filesystem that can be filled. Nothing here
mocks the broker or the database. The fixtures that make these are in tests/faults/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import func, select

from paku_iot.storage import schema
from paku_iot.storage.engine import create_engine
from paku_iot.storage.migrate import upgrade
from tests.support import ADMIN_TOKEN, eventually, free_port, require
from tests.support.broker import Broker
from tests.support.mqtt import close_paho

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_FAILURE_CODE = 0x80  # MQTT 5 reason codes from 0x80 up are failures

Key = tuple[str, int]  # (device id, ts in epoch ms)


def listening_port() -> int:
    """A free port below the ephemeral range, for a server that is killed and started again
    on it. A port from `free_port()` (ephemeral) may meanwhile become the local end of some
    outgoing connection on this busy machine, and the restart then finds it in use."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def epoch_ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


# ---- paku-iot processes ---------------------------------------------------------------


@dataclass
class PakuProcess:
    """One `paku-iot serve --role <role>` child process, its output in a log file."""

    role: str
    env: dict[str, str]
    cwd: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    wanted: bool = False  # started by the test and not yet killed or stopped by it

    def start(self) -> PakuProcess:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.role} at {time.strftime('%X')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "paku_iot", "serve", "--role", self.role],
                env={**os.environ, **self.env},
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wanted = True
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or acknowledged on the way out."""
        assert self.process is not None
        self.wanted = False
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        assert self.process is not None
        self.wanted = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError(
                    f"{self.role} did not stop on SIGTERM:\n{self.log()}"
                ) from None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def unexpected_errors(self) -> list[str]:
        """ERROR/CRITICAL log lines, and tracebacks other than the one gmqtt attaches to its
        warning about a lost connection (which the fault tests cause on purpose)."""
        found = []
        lines = self.log().splitlines()
        for n, line in enumerate(lines):
            if re.match(r"^\S+ (ERROR|CRITICAL) ", line):
                found.append(line)
            elif line.startswith("Traceback") and not (n and "[EXC: CONN LOST]" in lines[n - 1]):
                found.append("\n".join(lines[n - 1 : n + 12]))
        return found


@dataclass
class Deployment:
    """A paku-iot installation of the test's own: its broker, its database, its data dir,
    and the `paku-iot serve` processes started on them."""

    root: Path
    broker: Broker
    database_url: str
    data_dir: Path
    http_port: int = field(default_factory=listening_port)
    instance_id: str = field(default_factory=lambda: f"fault-{secrets.token_hex(4)}")
    processes: list[PakuProcess] = field(default_factory=list)
    # More settings for every process (PAKU_SPOOL_DIR, PAKU_SPOOL_MAX_BYTES...).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {
            "PAKU_DATABASE_URL": self.database_url,
            "PAKU_DATA_DIR": str(self.data_dir),
            "PAKU_BROKER_DIR": str(self.broker.paths.root),
            "PAKU_MQTT_HOST": self.broker.host,
            "PAKU_MQTT_PORT": str(self.broker.port),
            "PAKU_MQTT_BACKEND_PORT": str(self.broker.backend_port),
            "PAKU_HTTP_PORT": str(self.http_port),
            "PAKU_ADMIN_TOKEN": ADMIN_TOKEN,
            "PAKU_INSTANCE_ID": self.instance_id,
            # Short batches as in the other tests; the samples here are recent anyway.
            "PAKU_INGEST_LINGER_MS": "5",
            "PAKU_TELEMETRY_RETENTION_DAYS": "0",
            "PAKU_EVENTS_RETENTION_DAYS": "0",
            **self.extra_env,
        }

    def process(self, role: str) -> PakuProcess:
        made = PakuProcess(role, self.env(), self.root, self.root / f"paku-{role}.log")
        self.processes.append(made)
        return made

    def logs(self) -> str:
        return "\n".join(f"== {p.log_path.name}\n{p.tail()}" for p in self.processes)

    def ensure_running(self) -> None:
        """Fail at once (not retried by `eventually`) when a process exited by itself."""
        for made in self.processes:
            if made.wanted and not made.running:
                pytest.fail(f"paku-iot serve --role {made.role} exited:\n{made.tail()}")

    def stop_all(self) -> None:
        for made in self.processes:
            if made.running:
                with contextlib.suppress(AssertionError):
                    made.stop()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )

    async def health(self) -> tuple[int, dict[str, Any]]:
        self.ensure_running()
        async with self.client() as client:
            response = await client.get("/health")
            return response.status_code, response.json()

    async def wait_healthy(self, timeout: float = 60) -> None:
        async def healthy() -> None:
            try:
                code, body = await self.health()
            except httpx.TransportError as exc:
                raise AssertionError(str(exc)) from None
            assert code == 200, body
            assert body["status"] == "ok", body

        try:
            await eventually(healthy, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    async def provision(self, count: int, prefix: str = "dev") -> list[tuple[str, str]]:
        creds = []
        async with self.client() as client:
            for n in range(count):
                device_id = f"{prefix}-{n:03d}"
                response = await client.post("/devices", json={"model": "m", "id": device_id})
                assert response.status_code == 201, response.text
                creds.append((device_id, response.json()["credentials"]["password"]))
        return creds

    async def device(self, device_id: str) -> dict[str, Any]:
        async with self.client() as client:
            response = await client.get(f"/devices/{device_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

    async def rejected(self) -> list[dict[str, Any]]:
        async with self.client() as client:
            response = await client.get("/rejected", params={"limit": 1000})
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return items

    async def stored_keys(self) -> list[Key]:
        """Every telemetry row in the database as (device, ts ms), duplicates included."""
        engine = create_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(schema.telemetry.c.device_id, schema.telemetry.c.ts)
                )
                return [(device_id, epoch_ms(ts)) for device_id, ts in rows]
        finally:
            await engine.dispose()

    async def stored_count(self) -> int:
        self.ensure_running()
        engine = create_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                query = select(func.count()).select_from(schema.telemetry)
                return int((await conn.execute(query)).scalar_one())
        finally:
            await engine.dispose()


# What the `make_deployment` fixture gives: (database_url, data_dir=None) -> Deployment.
MakeDeployment = Callable[..., Deployment]


def sqlite_url(path: Path) -> str:
    """A migrated SQLite database at `path` (call it from a thread in async code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


# ---- devices ----------------------------------------------------------------------------


class FleetDevice:
    """One device: a paho MQTT v5 client on its own network thread. paho queues what is
    published while the link is down and (re)sends it, and reconnects by itself. Not the
    tests' DeviceClient, which never reconnects and waits for each PUBACK: a fleet device
    publishes at a set rate through broker restarts and network cuts."""

    def __init__(
        self, host: str, port: int, device_id: str, password: str, reconnect_s: float = 1
    ) -> None:
        self.device_id = device_id
        self.topic = f"paku/{device_id}/telemetry"
        self.sent: dict[int, int] = {}  # mid -> ts
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code
        self.connected = threading.Event()
        self.refusals: list[str] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5)
        client.username_pw_set(device_id, password)
        # paho declares int delays; it sleeps whatever it is given.
        client.reconnect_delay_set(min_delay=reconnect_s, max_delay=2)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client
        self._host, self._port = host, port

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self.refusals.append(str(reason))  # e.g. before the broker reloaded its passwords
        else:
            self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        self.connected.clear()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self.acks[mid] = reason.value

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()

    def publish(self, ts: int, n: int) -> int:
        payload = json.dumps({"ts": ts, "n": n, "temp": 21.5, "hum": 40})
        info = self.client.publish(self.topic, payload, qos=1)
        self.sent[info.mid] = ts
        return info.mid

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        close_paho(self.client)


class Fleet:
    """Many devices publishing QoS 1 telemetry with a device `ts`, round robin at a total
    rate. Remembers, per message, whether the broker acknowledged it (PUBACK < 0x80)."""

    def __init__(
        self, host: str, port: int, creds: list[tuple[str, str]], reconnect_s: float = 1
    ) -> None:
        self.devices = [FleetDevice(host, port, d, p, reconnect_s) for d, p in creds]
        # Recent, distinct per message: (device, base + n) is unique.
        self.base_ts = int(time.time() * 1000) - 3_600_000
        self.published = 0
        self.rounds = 0

    async def connect(self, timeout: float = 30) -> None:
        for device in self.devices:
            device.start()

        def all_connected() -> bool:
            return all(d.connected.wait(timeout) for d in self.devices)

        assert await asyncio.to_thread(all_connected), "devices could not connect: " + str(
            {d.device_id: d.refusals for d in self.devices if not d.connected.is_set()}
        )

    async def wait_for_subscriber(self, timeout: float = 30) -> None:
        """Until the collector's subscription is in place: a probe message gets PUBACK 0
        rather than 0x10 "no matching subscribers" (dropped; forgotten here)."""
        device = self.devices[0]
        deadline = time.monotonic() + timeout
        for n in range(1, 10_000):
            mid = device.publish(self.base_ts - n, -n)

            async def answered(mid: int = mid) -> None:
                assert mid in device.acks

            await eventually(answered, timeout=10)
            if device.acks[mid] == 0:
                self.published += 1
                return
            del device.sent[mid], device.acks[mid]
            assert time.monotonic() < deadline, "the collector never subscribed"
            await asyncio.sleep(0.1)

    def stream(self, per_device: int, rate: float, until: threading.Event | None = None) -> None:
        """Publish `per_device` messages from every device, round robin, at `rate` msgs/s
        in total. Blocking: run it in a thread.

        With `until`, carry on at that rate until it is set (at most 10 x `per_device`): for
        a test that acts once part of the stream is stored and needs devices still publishing
        then, however slowly a loaded machine lets the backend keep up."""
        started = time.monotonic()
        count = 0
        rounds = 0
        while rounds < per_device or (
            until is not None and not until.is_set() and rounds < 10 * per_device
        ):
            rounds += 1
            n = self.rounds  # a later stream carries on with new timestamps
            for device in self.devices:
                device.publish(self.base_ts + n, n)
            self.rounds += 1
            count += len(self.devices)
            self.published += len(self.devices)
            delay = started + count / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    @property
    def answered_count(self) -> int:
        return sum(len(d.acks) for d in self.devices)

    def sent(self) -> set[Key]:
        return {(d.device_id, ts) for d in self.devices for ts in d.sent.values()}

    def acked(self) -> set[Key]:
        """What the broker said it has: every message whose PUBACK was a success."""
        return {
            (d.device_id, d.sent[mid])
            for d in self.devices
            for mid, code in list(d.acks.items())
            if code < FIRST_FAILURE_CODE
        }

    def codes(self) -> dict[int, int]:
        """How many PUBACKs of each reason code."""
        counts: dict[int, int] = {}
        for d in self.devices:
            for code in list(d.acks.values()):
                counts[code] = counts.get(code, 0) + 1
        return counts

    async def wait_answered(self, timeout: float = 60) -> None:
        """Until every published message has its PUBACK."""

        async def answered() -> None:
            assert self.answered_count == self.published, (
                f"{self.answered_count} of {self.published} answered"
            )

        await eventually(answered, timeout=timeout)

    def close(self) -> None:
        for device in self.devices:
            device.close()


def check_exactly_once(acked: set[Key], sent: set[Key], stored: list[Key]) -> None:
    """Every acknowledged message stored once; nothing stored that was never sent."""
    assert len(stored) == len(set(stored)), "duplicate rows"
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    unknown = set(stored) - sent
    assert not unknown, f"{len(unknown)} rows nobody sent, e.g. {sorted(unknown)[:5]}"


# ---- the network between a device and the broker ------------------------------------------


class TcpProxy:
    """A TCP proxy in front of the broker (in the test's event loop) whose network can fail
    the way a device's does:

    - `blackhole()`: packets stop flowing both ways and nobody is told. Both sockets stay
      open, so the broker sees no DISCONNECT and no close: only its keepalive notices.
      New connections are refused meanwhile.
    - `reset()`: the connections are aborted (RST): the broker sees the socket close.
    - `restore()`: new connections are forwarded again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = True

    async def start(self) -> None:
        self._flowing = True
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while self._flowing:
                data = await source.read(65536)
                if not data:
                    break
                if not self._flowing:
                    return  # swallowed, and the other side is not told that we stopped
                sink.write(data)
                await sink.drain()
            if self._flowing:
                sink.close()  # an orderly close is passed on while the network is up

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def blackhole(self) -> None:
        self._flowing = False
        await self._stop_listening()

    async def reset(self) -> None:
        self._flowing = False
        await self._stop_listening()
        for device_side, broker_side in self._links:
            device_side.transport.abort()
            broker_side.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        """The network is back: forget the dead connections (without a word to either
        side), and forward new ones."""
        for device_side, broker_side in self._links:
            device_side.transport.abort()
            broker_side.transport.abort()
        self._links.clear()
        await self.start()

    async def close(self) -> None:
        await self._stop_listening()
        self._flowing = False
        for device_side, broker_side in self._links:
            device_side.transport.abort()
            broker_side.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


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
