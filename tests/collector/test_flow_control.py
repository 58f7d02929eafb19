"""While the database is stuck, the collector stops reading from the broker after
`ingest_queue_size` messages instead of piling everything up in its own memory; the broker
keeps the rest, and all of it is stored once the database is back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from paku_iot.server.service import Service, running_service
from paku_iot.settings import Settings
from paku_iot.storage import schema
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.mqtt import close_paho

MESSAGES = 20_000
QUEUE_SIZE = 300


def publish_burst(broker: Broker, device_id: str, password: str, base_ts: int) -> int:
    """Publish MESSAGES QoS 1 messages as fast as the broker takes them; returns how many
    the broker acknowledged. A raw paho client, not the tests' DeviceClient (which waits for
    each PUBACK): 500 in flight at once is what fills the collector's queue."""
    acked = 0
    done = threading.Event()

    def on_publish(_c: object, _u: object, _mid: int, reason: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        if acked == MESSAGES:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=paho.MQTTv5)
    client.username_pw_set(device_id, password)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for n in range(MESSAGES):
            payload = json.dumps({"ts": base_ts + n, "n": n})
            client.publish(f"paku/{device_id}/telemetry", payload, qos=1)
        done.wait(60)
    finally:
        client.disconnect()
        close_paho(client)
    return acked


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stuck_database_holds_the_backlog_at_the_queue_size(
    settings: Settings, broker: Broker, database_url: str
) -> None:
    settings = settings.model_copy(update={"ingest_queue_size": QUEUE_SIZE})
    db_file = database_url.removeprefix("sqlite:///")
    async with running_service(settings) as service:
        await eventually(lambda: asyncio.sleep(0, service.link.ready))
        made = await service.registry.provision(model="m", device_id="flow-1")
        await asyncio.sleep(0.5)  # the broker reloads its password file

        # Another writer holds the database: every commit of the collector waits.
        lock = sqlite3.connect(db_file, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        base_ts = int(time.time() * 1000) - 60_000
        try:
            acked = await asyncio.to_thread(publish_burst, broker, "flow-1", made.password, base_ts)
            assert acked == MESSAGES  # the broker has them all
            await asyncio.sleep(1)
        finally:
            lock.rollback()
            lock.close()

        async def all_stored() -> None:
            assert await telemetry_count(service) == MESSAGES

        await eventually(all_stored, timeout=60)
        assert service.writer is not None
        # The queue size, plus what was already read from the socket when it paused: the MQTT
        # client's stream buffer (up to 2 x 64 KiB) and one 64 KiB read, at no less than 45
        # bytes for each of these messages.
        read_ahead = 3 * 65_536 // 45
        assert service.writer.peak_backlog <= QUEUE_SIZE + read_ahead, service.writer.peak_backlog


async def telemetry_count(service: Service) -> int:
    async with service.engine.connect() as conn:
        result = await conn.execute(select(func.count()).select_from(schema.telemetry))
        return int(result.scalar_one())
