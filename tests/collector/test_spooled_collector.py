"""The collector acknowledges what is durable in its spool and drains the spool to the
database (issue 17): a database outage no longer leaves the backlog in the broker's queue,
a full spool pauses intake (and says so), and a replay of the spool is absorbed by the
database, even for messages without a device `ts`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from paku_iot.collector import spooled as spooled_module
from paku_iot.collector.spool_segments import CURSOR_NAME
from paku_iot.server.service import Service, running_service
from paku_iot.settings import SPOOL_MIN_BYTES, Settings
from paku_iot.storage import schema
from tests.support import eventually
from tests.support.api import admin_api
from tests.support.broker import Broker
from tests.support.mqtt import close_paho
from tests.support.postgres import pg_admin


def publish_burst(broker: Broker, device_id: str, password: str, count: int, base_ts: int) -> int:
    """Publish `count` QoS 1 samples as fast as the broker takes them (many in flight);
    returns how many the broker acknowledged."""
    acked = 0
    done = threading.Event()

    def on_publish(_c: object, _u: object, _mid: int, _reason: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        if acked == count:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5)
    client.username_pw_set(device_id, password)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for n in range(count):
            payload = json.dumps({"ts": base_ts + n, "n": n})
            client.publish(f"paku/{device_id}/telemetry", payload, qos=1)
        done.wait(60)
    finally:
        client.disconnect()
        close_paho(client)
    return acked


@asynccontextmanager
async def database_unavailable(settings: Settings) -> AsyncIterator[None]:
    """PostgreSQL refuses this test's database (its other databases are other tests')."""
    name = settings.resolved_database_url.rsplit("/", 1)[1]
    await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    await pg_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )
    try:
        yield
    finally:
        await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


async def telemetry_count(service: Service) -> int:
    async with service.engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(schema.telemetry))
        return int(result.scalar_one())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


async def ts_less_samples(broker: Broker, device_id: str, password: str, count: int) -> None:
    """Samples without a device ts: the receive time is their key. A few ms apart, since
    the receive time is kept to the millisecond."""
    device = await broker.device(device_id, password).connect()
    try:
        for n in range(count):
            assert await device.publish(f"paku/{device_id}/telemetry", f'{{"n": {n}}}') == 0
            await asyncio.sleep(0.005)
    finally:
        await device.disconnect()


MESSAGES = 3000


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_database_outage_is_absorbed_by_the_spool(
    api: httpx.AsyncClient,
    service: Service,
    settings: Settings,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = await service.registry.provision(model="m", device_id="sp-1")
    await asyncio.sleep(0.5)  # the broker reloads its password file
    assert service.spooled is not None
    # The database counts as behind sooner than in production.
    monkeypatch.setattr(spooled_module, "BEHIND_AFTER_S", 1.0)
    base_ts = int(time.time() * 1000) - 60_000
    async with database_unavailable(settings):
        acked = await asyncio.to_thread(
            publish_burst, broker, "sp-1", made.password, MESSAGES, base_ts
        )
        assert acked == MESSAGES
        await ts_less_samples(broker, "sp-1", made.password, 5)
        total = MESSAGES + 5
        spooled = service.spooled

        # More than the broker lets us hold unacknowledged (its max_inflight_messages, 1000):
        # the collector acknowledged them all, while the database was down.
        async def all_spooled() -> None:
            assert spooled.status().pending_messages == total
            assert spooled.intake.waiting == 0

        await eventually(all_spooled, timeout=20)

        async def backlog_shown() -> None:
            text = (await api.get("/metrics")).text
            assert metric(text, "paku_spool_pending_messages") == total
            assert metric(text, "paku_spool_bytes") > 0
            assert metric(text, "paku_spool_oldest_pending_seconds") > 1
            assert metric(text, "paku_spool_full") == 0
            body = (await api.get("/health")).json()
            assert body["components"]["collector"] == "degraded"
            assert "database behind" in body["details"]["collector"], body

        await eventually(backlog_shown, timeout=20)

    async def drained() -> None:
        assert await telemetry_count(service) == total
        assert service.spooled is not None
        assert service.spooled.status().pending_messages == 0
        body = (await api.get("/health")).json()
        assert body["status"] == "ok", body

    await eventually(drained, timeout=60)
    stored = await api.get("/devices/sp-1/telemetry", params={"limit": 1})
    assert stored.status_code == 200


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_full_spool_pauses_intake_and_resumes_once_the_database_is_back(
    settings: Settings, broker: Broker
) -> None:
    settings = settings.model_copy(update={"spool_max_bytes": SPOOL_MIN_BYTES})
    count = 20_000
    async with running_service(settings) as service:
        await eventually(lambda: asyncio.sleep(0, service.link.ready))
        made = await service.registry.provision(model="m", device_id="sp-full")
        await asyncio.sleep(0.5)
        spooled = service.spooled
        assert spooled is not None
        base_ts = int(time.time() * 1000) - 60_000
        async with admin_api(service) as api, database_unavailable(settings):
            acked = await asyncio.to_thread(
                publish_burst, broker, "sp-full", made.password, count, base_ts
            )
            assert acked == count  # the broker holds what the collector does not take

            async def paused() -> None:
                assert spooled.status().full
                text = (await api.get("/metrics")).text
                assert metric(text, "paku_spool_full") == 1
                body = (await api.get("/health")).json()
                assert "spool full" in body["details"]["collector"], body

            await eventually(paused, timeout=20)
            await asyncio.sleep(1)
            # Paused: the spool took far less than was published (a socket's worth of
            # read-ahead past its limit at most), the broker keeps the rest.
            assert spooled.status().pending_messages < count
            assert spooled.status().size_bytes < 2 * SPOOL_MIN_BYTES

        async def all_stored() -> None:
            assert await telemetry_count(service) == count
            assert not spooled.status().full

        await eventually(all_stored, timeout=120)
        assert spooled.intake.pauses >= 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_replayed_spool_stores_nothing_twice(
    settings: Settings, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash after a batch committed and before the spool's cursor moved: the records are
    read and written again. Done here by removing the cursor between two runs."""
    async with running_service(settings) as service:
        await eventually(lambda: asyncio.sleep(0, service.link.ready))
        made = await service.registry.provision(model="m", device_id="sp-replay")
        await asyncio.sleep(0.5)
        await ts_less_samples(broker, "sp-replay", made.password, 10)
        device = await broker.device("sp-replay", made.password).connect()
        base_ts = int(time.time() * 1000) - 60_000
        for n in range(10):
            sample = f'{{"ts": {base_ts + n}}}'
            assert await device.publish("paku/sp-replay/telemetry", sample) == 0
        await device.disconnect()

        async def stored() -> None:
            assert await telemetry_count(service) == 20

        await eventually(stored)
    cursor = settings.resolved_spool_dir / CURSOR_NAME
    assert cursor.exists()
    cursor.unlink()
    async with running_service(settings) as service:
        spooled = service.spooled
        assert spooled is not None

        async def replayed() -> None:
            assert spooled.status().pending_messages == 0

        await eventually(replayed)
        assert "holds 20 messages from an earlier run" in caplog.text
        assert await telemetry_count(service) == 20
        assert service.stats.rejected.total() == 0, service.stats.rejected
