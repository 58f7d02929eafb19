"""A real `paku-iot serve` process (uvicorn, API and collector) on a free port, against the
test's own Mosquitto and database; the `served` fixture (tests/conftest.py) starts it for the
schema fuzzing, the load test and the generated client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import ADMIN_TOKEN, free_port
from tests.support.broker import Broker


@dataclass
class Served:
    base_url: str
    broker: Broker
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]


def _wait_healthy(served: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            break
        try:
            response = httpx.get(f"{served.base_url}/health", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise AssertionError(f"paku-iot serve never became healthy ({last}):\n{served.output()}")


@contextmanager
def serve(workdir: Path, database_url: str, broker: Broker) -> Iterator[Served]:
    """`paku-iot serve` in its own process, healthy; its log is shown when it misbehaves."""
    port = free_port()
    env = {
        **os.environ,
        "PAKU_DATABASE_URL": database_url,
        "PAKU_BROKER_DIR": str(broker.paths.root),
        "PAKU_MQTT_HOST": broker.host,
        "PAKU_MQTT_PORT": str(broker.port),
        "PAKU_MQTT_BACKEND_PORT": str(broker.backend_port),
        "PAKU_HTTP_HOST": "127.0.0.1",
        "PAKU_HTTP_PORT": str(port),
        "PAKU_ADMIN_TOKEN": ADMIN_TOKEN,
        "PAKU_DATA_DIR": str(workdir / "served-data"),
        "PAKU_INSTANCE_ID": f"served-{port}",
        "PAKU_TELEMETRY_RETENTION_DAYS": "0",
        "PAKU_EVENTS_RETENTION_DAYS": "0",
        "PAKU_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    log = workdir / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "paku_iot", "serve"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = Served(f"http://127.0.0.1:{port}", broker, process, log)
    try:
        _wait_healthy(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
