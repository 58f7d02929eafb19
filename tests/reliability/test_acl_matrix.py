"""The broker's access control, tried with real MQTT v5 clients: a device reaches its own
topics only, and a revoked device is cut off at once. A backend client subscribed to
`paku/#` and a second device watch that nothing crossed."""

from __future__ import annotations

import asyncio
import queue
import time

import httpx
import pytest

from paku_iot.server.service import Service
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.mqtt import ConnectRefused, DeviceClient, Received

NOT_AUTHORIZED = 0x87
QUIET_S = 1.0  # how long "nothing arrives" is watched for

# ACL behaviour is the broker's; one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def drain(client: DeviceClient, seconds: float = QUIET_S) -> list[Received]:
    """Everything the client received within `seconds`."""
    got: list[Received] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(client.messages.get(timeout=left))
        except queue.Empty:
            break
    return got


async def received(client: DeviceClient, seconds: float = QUIET_S) -> list[Received]:
    return await asyncio.to_thread(drain, client, seconds)


async def provision(api: httpx.AsyncClient, device_id: str) -> str:
    response = await api.post("/devices", json={"model": "acl", "id": device_id})
    assert response.status_code == 201, response.text
    return str(response.json()["credentials"]["password"])


async def watcher(broker: Broker) -> DeviceClient:
    backend = await broker.backend().connect()
    assert await backend.subscribe("paku/#") == 1
    return backend


async def test_a_device_cannot_publish_beyond_its_own_uplink_topics(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    a = await broker.device("acl-a", await provision(api, "acl-a")).connect()
    backend = await watcher(broker)
    try:
        refused = [
            # another device's topics, up and down
            "paku/acl-b/telemetry",
            "paku/acl-b/state",
            "paku/acl-b/event/ack",
            "paku/acl-b/cmd",
            "paku/acl-b/config",
            # its own downlink
            "paku/acl-a/cmd",
            "paku/acl-a/config",
            # anything else
            "paku/acl-a",
            "paku/acl-a/other",
            "paku/acl-a/telemetry/x",
            "paku",
            "other/topic",
            "$SYS/broker/uptime",
            "$share/g/paku/acl-a/telemetry",
            "paku//telemetry",
            "/paku/acl-a/telemetry",
        ]
        codes = {topic: await a.publish(topic, b'{"x": 1}') for topic in refused}
        assert codes == dict.fromkeys(refused, NOT_AUTHORIZED)
        assert await received(backend) == []  # nothing crossed

        # The control: its own uplink topics are accepted and seen.
        for topic in ("paku/acl-a/telemetry", "paku/acl-a/state", "paku/acl-a/event/x"):
            assert await a.publish(topic, b'{"x": 1}') == 0
        seen = sorted(m.topic for m in await received(backend))
        assert seen == ["paku/acl-a/event/x", "paku/acl-a/state", "paku/acl-a/telemetry"]
    finally:
        await a.disconnect()
        await backend.disconnect()


async def test_a_device_reads_nothing_but_its_own_cmd_and_config(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    a = await broker.device("acl-a", await provision(api, "acl-a")).connect()
    b = await broker.device("acl-b", await provision(api, "acl-b")).connect()
    backend = await watcher(broker)
    try:
        # B leaves retained state behind, as every device does.
        assert await b.publish("paku/acl-b/state", b'{"online": true}', retain=True) == 0
        filters = [
            "#",
            "+/#",
            "$SYS/#",
            "$SYS/broker/version",
            "paku/#",
            "paku/+/cmd",
            "paku/+/config",
            "paku/+/state",
            "paku/acl-b/#",
            "paku/acl-b/cmd",
            "paku/acl-b/config",
            "paku/acl-b/telemetry",
            "paku/acl-b/state",
            "paku/acl-a/telemetry",
            "$share/g/paku/#",
        ]
        grants = {f: await a.subscribe(f) for f in filters}
        # Mosquitto grants every SUBSCRIBE (it checks reads per message, not per filter);
        # what matters is below: nothing that is not A's own arrives through any of them.
        assert set(grants.values()) <= {1, NOT_AUTHORIZED}, grants
        assert await received(a) == []  # no retained state, no $SYS

        assert await b.publish("paku/acl-b/telemetry", b'{"t": 1}') == 0
        assert await b.publish("paku/acl-b/event/x", b"{}") == 0
        assert await a.publish("paku/acl-a/telemetry", b'{"t": 2}') == 0  # not even its own
        assert await backend.publish("paku/acl-b/cmd", b'{"id": "c1"}') == 0
        assert await backend.publish("paku/acl-b/config", b'{"version": 1}') == 0
        assert await received(a) == []

        # The control: A's own downlink arrives (once per matching filter), and B got its own.
        assert await backend.publish("paku/acl-a/cmd", b'{"id": "c2"}') == 0
        assert await backend.publish("paku/acl-a/config", b'{"version": 1}') == 0
        assert {m.topic for m in await received(a)} == {"paku/acl-a/cmd", "paku/acl-a/config"}
        assert await b.subscribe("paku/acl-b/cmd") == 1
        assert await backend.publish("paku/acl-b/cmd", b'{"id": "c3"}') == 0
        assert [m.topic for m in await received(b)] == ["paku/acl-b/cmd"]
    finally:
        for client in (a, b, backend):
            await client.disconnect()


async def test_a_last_will_on_another_devices_topic_is_never_delivered(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    backend = await watcher(broker)
    will = b'{"online": false}'
    a = DeviceClient(
        broker.host,
        broker.port,
        "acl-a",
        await provision(api, "acl-a"),
        will=("paku/acl-b/state", will),
    )
    c = DeviceClient(
        broker.host,
        broker.port,
        "acl-c",
        await provision(api, "acl-c"),
        will=("paku/acl-c/state", will),
    )
    await a.connect()
    await c.connect()
    try:
        # MQTT v5 DISCONNECT with reason 0x04: the broker publishes the Last Will now.
        await a.disconnect(with_will=True)
        await c.disconnect(with_will=True)  # the control: its own will
        assert [(m.topic, m.payload) for m in await received(backend)] == [
            ("paku/acl-c/state", will)
        ]
    finally:
        await backend.disconnect()


async def test_a_deleted_device_is_disconnected_at_once_and_stays_out(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    password = await provision(api, "acl-gone")
    device = await broker.device("acl-gone", password).connect()
    assert await device.subscribe("paku/acl-gone/cmd") == 1
    started = time.monotonic()
    assert (await api.delete("/devices/acl-gone")).status_code == 204

    async def cut_off() -> None:
        assert not device.is_connected

    await eventually(cut_off, timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"still connected {elapsed:.2f}s after the delete"
    with pytest.raises(ConnectRefused):
        await broker.device("acl-gone", password).connect()
    await device.disconnect()


async def test_rotated_credentials_disconnect_the_old_session_at_once(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    old = await provision(api, "acl-rot")
    device = await broker.device("acl-rot", old).connect()
    rotated = await api.post("/devices/acl-rot/credentials")
    assert rotated.status_code == 200

    async def cut_off() -> None:
        assert not device.is_connected

    await eventually(cut_off, timeout=2)
    with pytest.raises(ConnectRefused):
        await broker.device("acl-rot", old).connect()
    fresh = await broker.device("acl-rot", rotated.json()["credentials"]["password"]).connect()
    assert await fresh.publish("paku/acl-rot/telemetry", b"{}") == 0
    await fresh.disconnect()
    await device.disconnect()


async def test_another_devices_client_id_gives_no_access_to_its_topics(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    """A connects with B's client id. The device listeners ignore the id a device asks for
    (it is always its username), so B keeps its connection and A gets nothing of B's."""
    b = DeviceClient(broker.host, broker.port, "acl-b", await provision(api, "acl-b"))
    await b.connect()
    assert await b.subscribe("paku/acl-b/cmd") == 1
    backend = await broker.backend().connect()
    a = DeviceClient(
        broker.host, broker.port, "acl-a", await provision(api, "acl-a"), client_id="acl-b"
    )
    try:
        await a.connect()
        assert await a.subscribe("paku/acl-b/cmd") in {1, NOT_AUTHORIZED}
        await backend.publish("paku/acl-b/cmd", b'{"id": "c1"}')
        await backend.publish("paku/acl-b/config", b'{"version": 1}', retain=True)
        assert await received(a) == []
        assert await a.publish("paku/acl-b/telemetry", b"{}") == NOT_AUTHORIZED
        assert b.is_connected
    finally:
        for client in (a, b, backend):
            await client.disconnect()
