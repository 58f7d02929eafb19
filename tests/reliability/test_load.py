"""Load: many concurrent HTTP clients against a served paku-iot (uvicorn, API and collector in
one process) while devices publish through Mosquitto. No request may fail, and ingest must
not stall: the stored row count keeps growing and catches up with every PUBACKed message.

`make test` runs a short version (50 clients, 5 s); `make soak` the full one (200, 30 s)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from paku_iot.storage import schema
from paku_iot.storage.urls import async_database_url
from tests.support.mqtt import close_paho
from tests.support.served import Served

DEVICES = 10
RATE_PER_DEVICE = 20  # messages a second: 200 a second in all
BASE_TS = 1_780_000_000_000


@dataclass
class Publisher:
    """One device publishing QoS 1 telemetry at a steady rate on its own paho thread. A raw
    paho client, not the tests' DeviceClient (which waits for each PUBACK): the rate must
    not depend on how fast the broker answers."""

    served: Served
    device_id: str
    password: str
    index: int
    sent: int = 0
    acked: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=paho.MQTTv5
        )
        client.username_pw_set(self.device_id, self.password)
        lock = threading.Lock()

        def on_publish(*_args: Any) -> None:
            with lock:
                self.acked += 1

        client.on_publish = on_publish
        client.connect(self.served.broker.host, self.served.broker.port, keepalive=30)
        client.loop_start()
        try:
            interval = 1 / RATE_PER_DEVICE
            next_at = time.monotonic()
            while not self.stop.is_set():
                ts = BASE_TS + self.index * 10_000_000 + self.sent
                payload = json.dumps({"ts": ts, "n": self.sent, "temp": 20.5})
                client.publish(f"paku/{self.device_id}/telemetry", payload, qos=1)
                self.sent += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + 30
            while self.acked < self.sent and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            client.disconnect()
            close_paho(client)


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


async def http_client(
    client: httpx.AsyncClient, device_ids: list[str], until: float, tally: Tally, seed: int
) -> None:
    """One client: a loop of the calls an app or admin tool makes, mostly reads."""
    rng = random.Random(seed)
    while time.monotonic() < until:
        device = rng.choice(device_ids)
        roll = rng.random()
        if roll < 0.25:
            call = client.get(f"/devices/{device}/telemetry", params={"limit": 50})
        elif roll < 0.45:
            call = client.get("/devices", params={"limit": 50})
        elif roll < 0.6:
            call = client.get(f"/devices/{device}")
        elif roll < 0.7:
            call = client.get(f"/devices/{device}/events", params={"limit": 10})
        elif roll < 0.8:
            call = client.get("/rejected", params={"limit": 10})
        elif roll < 0.87:
            call = client.get("/health")
        elif roll < 0.95:
            call = client.post(f"/devices/{device}/commands", json={"name": "ping"})
        else:
            call = client.put(f"/devices/{device}/config", json={"config": {"n": seed}})
        started = time.monotonic()
        try:
            response = await call
        except httpx.HTTPError as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        tally.latencies.append(time.monotonic() - started)
        tally.statuses[str(response.status_code)] += 1
        if response.status_code >= 300:
            tally.errors.append(
                f"{response.request.url.path}: {response.status_code} {response.text[:200]}"
            )


async def stored_rows(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(schema.telemetry))).scalar_one()
        )


async def run_load(served: Served, database_url: str, clients: int, seconds: float) -> None:
    headers = served.admin_headers
    async with httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=60) as setup:
        passwords = {}
        for i in range(DEVICES):
            made = await setup.post("/devices", json={"model": "load", "id": f"load-{i:02d}"})
            assert made.status_code == 201, made.text
            passwords[made.json()["id"]] = made.json()["credentials"]["password"]

    publishers = [
        Publisher(served, device_id, password, i)
        for i, (device_id, password) in enumerate(sorted(passwords.items()))
    ]
    threads = [threading.Thread(target=p.run, daemon=True) for p in publishers]
    for thread in threads:
        thread.start()
    engine = create_async_engine(async_database_url(database_url))
    tally = Tally()
    progress: list[tuple[float, int]] = []
    try:
        # uvicorn closes a connection idle for 5 s (timeout_keep_alive), and httpx keeps one
        # for 5 s too: on a loaded machine the client then reuses a connection the server is
        # closing at that moment (ReadError, "Server disconnected without sending a
        # response"). A client has to forget idle connections well before the server does.
        limits = httpx.Limits(
            max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=1
        )
        async with httpx.AsyncClient(
            base_url=served.base_url, headers=headers, timeout=60, limits=limits
        ) as client:
            start = time.monotonic()
            until = start + seconds
            load = [
                asyncio.create_task(http_client(client, sorted(passwords), until, tally, seed))
                for seed in range(clients)
            ]
            while time.monotonic() < until:
                progress.append((time.monotonic() - start, await stored_rows(engine)))
                await asyncio.sleep(0.5)
            await asyncio.gather(*load)
        for publisher in publishers:
            publisher.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 40)
        acked = sum(p.acked for p in publishers)
        sent = sum(p.sent for p in publishers)

        deadline = time.monotonic() + 30
        while (stored := await stored_rows(engine)) < acked and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()

    requests = sum(tally.statuses.values())
    latencies = sorted(tally.latencies) or [0.0]
    summary = (
        f"{clients} clients, {seconds:.0f}s: {requests} requests ({requests / seconds:.0f}/s), "
        f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; "
        f"statuses {dict(tally.statuses)}; published {sent}, acked {acked}, stored {stored}"
    )
    print(summary)
    assert not tally.errors, (
        f"{len(tally.errors)} failed requests, e.g. {tally.errors[:5]}\n{summary}"
    )
    assert requests >= clients, summary  # every client got answers
    assert acked == sent, summary
    assert stored == acked, summary
    # No stall: while devices published, the stored count never stood still for 3 s.
    longest, last_change = 0.0, progress[0]
    for at, rows in progress[1:]:
        if rows != last_change[1]:
            last_change = (at, rows)
        longest = max(longest, at - last_change[0])
    assert longest < 3.0, f"ingest stood still for {longest:.1f}s: {progress}\n{summary}"
    async with httpx.AsyncClient(base_url=served.base_url, headers=headers) as check:
        health = await check.get("/health")
    assert health.json()["status"] == "ok", health.text


@pytest.mark.timeout(180)
async def test_api_under_load_while_ingesting_short(served: Served, database_url: str) -> None:
    await run_load(served, database_url, clients=50, seconds=5)


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_api_under_load_while_ingesting(served: Served, database_url: str) -> None:
    await run_load(served, database_url, clients=200, seconds=30)
