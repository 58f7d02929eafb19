"""Memory of each service at rest and under a paced load, as the operator's VM would see it.

    python -m bench.memory --devices 100 --rate 1000 --seconds 30

Runs Mosquitto (project config), `paku-iot serve` as its own process (the image's command)
against a fresh PostgreSQL database, provisions devices, then measures resident memory (PSS,
which splits shared pages fairly) of each process at rest and at the peak of a paced load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import PG_ADMIN, free_port, pg, pss_mib
from bench.scenarios import _wait_healthy

TOKEN = "bench-token-" + "x" * 20


def postgres_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def snapshot(paku: int, broker: int) -> dict[str, float]:
    return {
        "paku-iot": pss_mib(paku),
        "mosquitto": pss_mib(broker),
        "postgresql (all processes)": sum(pss_mib(p) for p in postgres_pids()),
    }


async def run(devices: int, rate: float, seconds: int, work: Path) -> None:
    name = f"paku_mem_{secrets.token_hex(4)}"
    await pg(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    mqtt_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "PAKU_DATABASE_URL": url,
        "PAKU_MQTT_PORT": str(mqtt_port),
        "PAKU_MQTT_BACKEND_PORT": str(free_port()),
        "PAKU_HTTP_PORT": str(http_port),
        "PAKU_ADMIN_TOKEN": TOKEN,
        "PAKU_DATA_DIR": str(work / "data"),
        "PAKU_BROKER_DIR": str(work / "broker"),
        "PAKU_LOG_LEVEL": "WARNING",
    }
    paku = [sys.executable, "-m", "paku_iot"]
    subprocess.run(
        [*paku, "broker-config", "--out", str(work / "broker")],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run([*paku, "migrate"], env=env, check=True, capture_output=True)
    broker = subprocess.Popen(["mosquitto", "-c", str(work / "broker" / "mosquitto.conf")])
    server = subprocess.Popen([*paku, "serve"], env=env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api:
            await _wait_healthy(api)
            creds = []
            for n in range(devices):
                body = (
                    await api.post("/devices", json={"model": "bench", "id": f"m-{n:05d}"})
                ).json()
                creds.append((body["id"], body["credentials"]["password"]))
        (work / "creds.json").write_text(json.dumps(creds))
        await asyncio.sleep(3)
        rest = snapshot(server.pid, broker.pid)
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--port",
                str(mqtt_port),
                "--credentials",
                str(work / "creds.json"),
                "--duration",
                str(seconds),
                "--rate",
                str(rate),
            ]
        )
        peak = dict(rest)
        started = time.monotonic()
        while load.poll() is None and time.monotonic() - started < seconds * 3:
            await asyncio.sleep(1)
            for key, value in snapshot(server.pid, broker.pid).items():
                peak[key] = max(peak[key], value)
        load.wait()
        print(f"devices={devices} offered={rate:.0f} msgs/s for ~{seconds}s")
        print("| service | at rest (MiB PSS) | under load (peak MiB PSS) |")
        print("|---|---|---|")
        for key in rest:
            print(f"| {key} | {rest[key]:.1f} | {peak[key]:.1f} |")
    finally:
        server.terminate()
        server.wait()
        broker.terminate()
        broker.wait()
        await pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(run(args.devices, args.rate, args.seconds, Path(work)))


if __name__ == "__main__":
    main()
