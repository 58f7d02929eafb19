"""Ingest benchmark: Mosquitto (project config) + PostgreSQL or SQLite + paku-iot's collector
in this process + a load generator in another, then counts what was persisted.

    python -m bench.ingest --db postgresql --devices 50 --messages 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy import func, select

from paku_iot.broker.files import BrokerOptions
from paku_iot.broker.process import find_mosquitto
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.service import running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from paku_iot.storage import schema
from paku_iot.storage.migrate import upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


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


async def bench(db: str, devices: int, messages: int, rate: float, work: Path) -> None:
    if db == "postgresql":
        name = f"paku_bench_{secrets.token_hex(4)}"
        await pg(f"CREATE DATABASE {name}")
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    else:
        name = ""
        url = f"sqlite:///{work / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    port = free_port()
    paths = prepare_broker_dir(
        work / "broker",
        BrokerOptions("127.0.0.1", port, BACKEND_MQTT_USERNAME, 65536, 1_000_000),
    )
    broker = subprocess.Popen([find_mosquitto(None), "-c", str(paths.config)])
    await asyncio.sleep(0.5)
    settings = Settings(
        data_dir=work / "data",
        database_url=url,
        mqtt_port=port,
        broker_dir=paths.root,
        admin_token="bench",
        instance_id="bench",
    )
    try:
        async with running_service(settings) as service:
            while not service.link.ready:
                await asyncio.sleep(0.05)
            creds = []
            for n in range(devices):
                provisioned = await service.registry.provision(
                    model="bench", device_id=f"b-{n:05d}"
                )
                creds.append((provisioned.device.id, provisioned.password))
            cred_file = work / "creds.json"
            cred_file.write_text(json.dumps(creds))
            total = devices * messages
            cpu0 = time.process_time()
            started = time.monotonic()
            loadgen = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.loadgen",
                "--port",
                str(port),
                "--credentials",
                str(cred_file),
                "--messages",
                str(messages),
                "--rate",
                str(rate),
            )
            stored = 0
            while stored < total:
                await asyncio.sleep(0.25)
                async with service.engine.connect() as conn:
                    stored = (
                        await conn.execute(select(func.count()).select_from(schema.telemetry))
                    ).scalar_one()
                if time.monotonic() - started > 600:
                    break
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu0
            await loadgen.wait()
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"db={db} devices={devices} messages={total} offered_rate={rate or 'max'} "
                f"stored={stored} elapsed={elapsed:.2f}s rate={stored / elapsed:,.0f} msg/s "
                f"collector_cpu={cpu / (total / 1000):.3f}s/1k peak_rss={rss_mb:.0f}MB "
                f"batches={service.stats.batches}"
            )
    finally:
        broker.terminate()
        broker.wait()
        if name:
            await pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000, help="per device")
    parser.add_argument("--rate", type=float, default=0, help="total msgs/s; 0 = flat out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(bench(args.db, args.devices, args.messages, args.rate, Path(work)))


if __name__ == "__main__":
    main()
