"""The core loop with real clients: provision, connect, publish, query it back.

Every test runs on SQLite and on PostgreSQL, with a Mosquitto started from the project's own
generated config and a collector acking only after commit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from paku_iot.server.service import Role, Service, running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker
from tests.support.mqtt import ConnectRefused, DeviceClient

NOT_AUTHORISED = 0x87


async def provision(api: httpx.AsyncClient, device_id: str, model: str = "sensor") -> str:
    response = await api.post("/devices", json={"model": model, "id": device_id})
    assert response.status_code == 201, response.text
    password: str = response.json()["credentials"]["password"]
    return password


async def telemetry(api: httpx.AsyncClient, device_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/devices/{device_id}/telemetry", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settled(api: httpx.AsyncClient, device_id: str, count: int) -> list[dict[str, Any]]:
    """The device's telemetry once `count` rows are there. A device's PUBACK comes from the
    broker; the collector commits a moment later."""

    async def check() -> list[dict[str, Any]]:
        items = await telemetry(api, device_id, limit=1000)
        assert len(items) >= count, items
        return items

    return await eventually(check)


async def rejected(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/rejected", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
async def device(api: httpx.AsyncClient, broker: Broker) -> DeviceClient:
    password = await provision(api, "dev-a")
    client = await broker.device("dev-a", password).connect()
    yield client  # type: ignore[misc]
    if client.is_connected:
        await client.disconnect()


async def test_device_telemetry_is_stored_and_queryable(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    code = await device.publish(
        "paku/dev-a/telemetry", json.dumps({"ts": 1780000000000, "temp": 21.5})
    )
    assert code == 0
    items = await settled(api, "dev-a", 1)
    assert items == [
        {
            "ts": "2026-05-28T20:26:40Z",
            "receivedAt": items[0]["receivedAt"],
            "payload": {"ts": 1780000000000, "temp": 21.5},
        }
    ]
    shown = (await api.get("/devices/dev-a")).json()
    assert shown["lastSeenAt"] is not None


async def test_rfc3339_ts_and_receive_time_fallback(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    await device.publish("paku/dev-a/telemetry", '{"ts": "2026-03-01T12:00:00.250+01:00", "v": 1}')
    await device.publish("paku/dev-a/telemetry", '{"v": 2}')
    items = await settled(api, "dev-a", 2)
    assert [i["payload"]["v"] for i in items] == [2, 1]  # newest first
    assert items[1]["ts"] == "2026-03-01T11:00:00.250000Z"
    assert items[0]["ts"] == items[0]["receivedAt"]


async def test_redelivered_message_is_stored_once(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    message = json.dumps({"ts": 1780000000000, "seq": 1})
    for _ in range(3):  # what a device retrying after a lost PUBACK sends
        assert await device.publish("paku/dev-a/telemetry", message) == 0
    await device.publish("paku/dev-a/event/button", '{"ts": 1780000000000, "press": "long"}')
    await device.publish("paku/dev-a/event/button", '{"ts": 1780000000000, "press": "long"}')
    # A marker published last: once it is stored, everything before it has been handled.
    await device.publish("paku/dev-a/telemetry", '{"ts": 1780000009000, "marker": true}')
    assert len(await settled(api, "dev-a", 2)) == 2
    events = (await api.get("/devices/dev-a/events")).json()["items"]
    assert len(events) == 1


async def test_wrong_or_unknown_credentials_are_refused(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "dev-b")
    with pytest.raises(ConnectRefused):
        await broker.device("dev-b", password + "x").connect()
    with pytest.raises(ConnectRefused):
        await broker.device("nobody", password).connect()
    with pytest.raises(ConnectRefused):
        await broker.device("", "").connect()
    client = await broker.device("dev-b", password).connect()
    await client.disconnect()


async def test_device_is_confined_to_its_own_topics(api: httpx.AsyncClient, broker: Broker) -> None:
    a = await broker.device("dev-a", await provision(api, "dev-a")).connect()
    b = await broker.device("dev-b", await provision(api, "dev-b")).connect()

    # A cannot write into B's topics, nor into its own downlink topics.
    for topic in (
        "paku/dev-b/telemetry",
        "paku/dev-b/state",
        "paku/dev-b/event/button",
        "paku/dev-a/cmd",
        "paku/dev-a/config",
        "paku/other",
        "elsewhere/x",
    ):
        assert await a.publish(topic, '{"ts": 1780000000000, "x": 1}') == NOT_AUTHORISED, topic

    # A cannot read B's downlink nor wildcard its way to everything. Mosquitto may grant the
    # subscription itself; what matters is that nothing it may not read is delivered.
    for topic in ("paku/dev-b/cmd", "paku/dev-b/config", "paku/#", "#", "$SYS/#", "paku/+/cmd"):
        await a.subscribe(topic)
    assert await b.subscribe("paku/dev-b/cmd") == 1
    assert await b.subscribe("paku/dev-b/config") == 1

    backend = await broker.backend().connect()
    await backend.publish("paku/dev-b/cmd", '{"id": "c1", "name": "blink"}')
    await backend.publish("paku/dev-b/config", '{"version": 1, "config": {}}', retain=True)
    received = {(await asyncio.to_thread(b.messages.get, True, 5)).topic for _ in range(2)}
    assert received == {"paku/dev-b/cmd", "paku/dev-b/config"}
    await asyncio.sleep(0.5)  # anything A could read has had time to arrive
    assert a.messages.empty(), a.messages.get_nowait()

    assert await telemetry(api, "dev-b") == []
    assert (await api.get("/devices/dev-b")).json()["lastSeenAt"] is None
    for client in (a, b, backend):
        await client.disconnect()


async def test_state_and_last_will_track_presence(api: httpx.AsyncClient, broker: Broker) -> None:
    password = await provision(api, "dev-w")
    client = await broker.device(
        "dev-w", password, will=("paku/dev-w/state", b'{"online": false}')
    ).connect()
    await client.publish(
        "paku/dev-w/state", '{"online": true, "rssi": -61, "fwVersion": "1.2.0"}', retain=True
    )

    async def online_now() -> dict[str, Any]:
        device: dict[str, Any] = (await api.get("/devices/dev-w")).json()
        assert device["online"] is True
        return device

    shown = await eventually(online_now)
    assert shown["rssi"] == -61
    assert shown["fwVersion"] == "1.2.0"
    online = (await api.get("/devices", params={"online": "true"})).json()["items"]
    assert [d["id"] for d in online] == ["dev-w"]

    await client.drop_network()  # no DISCONNECT: only the broker's Last Will tells

    async def offline() -> None:
        device = (await api.get("/devices/dev-w")).json()
        assert device["online"] is False
        assert device["fwVersion"] == "1.2.0"  # the will says only what it says
        assert device["lastSeenAt"] == shown["lastSeenAt"]  # the will is not a sighting

    await eventually(offline, timeout=15)


async def test_two_events_in_one_millisecond_are_both_kept(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    await device.publish("paku/dev-a/event/ack", '{"ts": 1780000000000, "id": "c1", "ok": true}')
    await device.publish("paku/dev-a/event/ack", '{"ts": 1780000000000, "id": "c2", "ok": true}')
    await device.publish("paku/dev-a/event/ack", '{"ts": 1780000000000, "id": "c2", "ok": true}')

    async def two() -> None:
        items = (await api.get("/devices/dev-a/events")).json()["items"]
        assert sorted(i["payload"]["id"] for i in items) == ["c1", "c2"]

    await eventually(two)


async def test_retained_telemetry_is_not_stored_again_on_resubscribe(
    api: httpx.AsyncClient, device: DeviceClient, service: Service, settings: Settings
) -> None:
    await device.publish("paku/dev-a/telemetry", '{"v": 1}', retain=True)
    await device.publish("paku/dev-a/event/boot", '{"v": 1}', retain=True)
    await settled(api, "dev-a", 1)

    async def event_stored() -> None:
        assert len((await api.get("/devices/dev-a/events")).json()["items"]) == 1

    # Both stored (and so acknowledged) before the link goes: a message without `ts` that is
    # in flight when the connection drops is delivered again, and stored twice, by design
    # (at least once; only a device `ts` makes a redelivery recognisable).
    await eventually(event_stored)
    await asyncio.sleep(0.2)  # the PUBACK follows the commit
    await service.link.stop()
    # The first service still holds its spool (one spool, one process): a directory of its own.
    async with running_service(_own_spool(settings)) as again:
        # The collector subscribes again on reconnect; a marker shows it is live.
        await eventually(lambda: asyncio.sleep(0, again.link.ready))
        await device.publish("paku/dev-a/telemetry", '{"v": 2}')
        items = await settled(api, "dev-a", 2)
        await asyncio.sleep(0.3)
        items = await telemetry(api, "dev-a")
    assert sorted(i["payload"]["v"] for i in items) == [1, 2]
    events = (await api.get("/devices/dev-a/events")).json()["items"]
    assert len(events) == 1


async def test_events_are_stored_by_name(api: httpx.AsyncClient, device: DeviceClient) -> None:
    await device.publish("paku/dev-a/event/button", '{"ts": 1780000000000, "press": "short"}')
    await device.publish("paku/dev-a/event/error", '{"ts": 1780000001000, "code": 7}')

    async def both() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await api.get("/devices/dev-a/events")).json()["items"]
        assert len(items) == 2
        return items

    everything = await eventually(both)
    assert [(e["type"], e["ts"]) for e in everything] == [
        ("error", "2026-05-28T20:26:41Z"),
        ("button", "2026-05-28T20:26:40Z"),
    ]
    buttons = (await api.get("/devices/dev-a/events", params={"type": "button"})).json()
    assert [e["payload"] for e in buttons["items"]] == [{"ts": 1780000000000, "press": "short"}]


async def test_telemetry_window_and_paging(api: httpx.AsyncClient, device: DeviceClient) -> None:
    base = 1780000000000
    for n in range(10):
        await device.publish("paku/dev-a/telemetry", json.dumps({"ts": base + n * 1000, "n": n}))
    await settled(api, "dev-a", 10)
    window = await telemetry(
        api, "dev-a", **{"from": "2026-05-28T20:26:42Z", "to": "2026-05-28T20:26:47Z"}
    )
    assert [i["payload"]["n"] for i in window] == [6, 5, 4, 3, 2]

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/devices/dev-a/telemetry", params=params)).json()
        seen.extend(i["payload"]["n"] for i in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(range(9, -1, -1))

    naive = await api.get("/devices/dev-a/telemetry", params={"from": "2026-05-28T20:26:42"})
    assert naive.status_code == 422


async def test_bad_input_is_kept_with_a_reason_and_ingest_goes_on(
    api: httpx.AsyncClient, device: DeviceClient, broker: Broker
) -> None:
    bad = {
        b"not json": "invalid_json",
        b"[1, 2]": "not_object",
        b'{"v": NaN}': "invalid_json",
        b"\xff\xfe": "invalid_utf8",
        b'{"ts": "yesterday"}': "invalid_ts",
        b'{"ts": 5}': "invalid_ts",
        b'{"v": "' + b"x" * 70_000 + b'"}': "oversize",
    }
    for payload, _ in bad.items():
        assert await device.publish("paku/dev-a/telemetry", payload) == 0
    assert await device.publish("paku/dev-a/state", '{"online": "yes"}') == 0

    # Topics a device cannot reach, sent with the backend's own account.
    backend = await broker.backend().connect()
    await backend.publish("paku/ghost-1/telemetry", '{"v": 1}')
    await backend.publish("paku/dev-a/event/too/deep", '{"v": 1}')
    await backend.disconnect()

    assert await device.publish("paku/dev-a/telemetry", '{"ts": 1780000000000, "ok": true}') == 0
    assert [i["payload"] for i in await settled(api, "dev-a", 1)] == [
        {"ts": 1780000000000, "ok": True}
    ]

    async def all_rejected() -> None:
        reasons = sorted(r["reason"] for r in await rejected(api))
        expected = sorted([*bad.values(), "invalid_state", "unknown_device", "invalid_topic"])
        assert reasons == expected

    await eventually(all_rejected)
    oversize = await rejected(api, reason="oversize")
    assert oversize[0]["payloadSize"] > 70_000
    assert len(oversize[0]["payload"]) <= 4096
    ghost = await rejected(api, deviceId="ghost-1")
    assert ghost[0]["topic"] == "paku/ghost-1/telemetry"
    assert ghost[0]["payload"] == '{"v":1}'
    assert "ghost-1" in ghost[0]["detail"]


async def test_messages_sent_while_the_collector_is_down_are_not_lost(
    api: httpx.AsyncClient, service: Service, broker: Broker, settings: Settings
) -> None:
    password = await provision(api, "dev-q")
    device = await broker.device("dev-q", password).connect()
    await service.link.stop()  # the collector goes away; its broker session stays
    for n in range(20):
        assert (
            await device.publish("paku/dev-q/telemetry", json.dumps({"ts": 1780000000000 + n})) == 0
        )
    assert await telemetry(api, "dev-q") == []

    # The first service still holds its spool (one spool, one process): a directory of its own.
    async with running_service(_own_spool(settings)) as again:

        async def all_there() -> None:
            assert len(await telemetry(api, "dev-q", limit=100)) == 20

        await eventually(all_there)
        assert again.stats.accepted["telemetry"] == 20
    await device.disconnect()


async def test_deleting_a_device_cuts_it_off(api: httpx.AsyncClient, broker: Broker) -> None:
    password = await provision(api, "dev-d")
    client = await broker.device("dev-d", password).connect()
    await client.publish("paku/dev-d/telemetry", '{"v": 1}')
    await settled(api, "dev-d", 1)
    assert (await api.delete("/devices/dev-d")).status_code == 204

    async def dropped() -> None:
        assert not client.is_connected

    await eventually(dropped)
    with pytest.raises(ConnectRefused):
        await broker.device("dev-d", password).connect()


async def test_rotated_credentials_replace_the_old_ones(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    old = await provision(api, "dev-r")
    client = await broker.device("dev-r", old).connect()
    new = (await api.post("/devices/dev-r/credentials")).json()["credentials"]["password"]

    async def dropped() -> None:
        assert not client.is_connected

    await eventually(dropped)
    with pytest.raises(ConnectRefused):
        await broker.device("dev-r", old).connect()
    fresh = await broker.device("dev-r", new).connect()
    assert await fresh.publish("paku/dev-r/telemetry", '{"v": 2}') == 0
    await fresh.disconnect()


async def test_health_names_the_broker_when_it_is_down(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    broker.stop()

    async def unavailable() -> None:
        response = await api.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["components"]["broker"] == "unavailable"
        assert body["components"]["database"] == "ok"

    await eventually(unavailable)
    broker.start()

    async def recovered() -> None:
        assert (await api.get("/health")).status_code == 200

    await eventually(recovered, timeout=20)


async def test_api_and_collector_can_run_as_separate_roles(
    settings: Settings, broker: Broker
) -> None:
    collector_settings = settings.model_copy(update={"instance_id": "collector-only"})
    async with (
        running_service(settings, frozenset({Role.API})) as api_only,
        running_service(collector_settings, frozenset({Role.COLLECTOR})) as collector_only,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(api_only)),
            base_url="http://paku.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api,
    ):
        await eventually(lambda: asyncio.sleep(0, collector_only.link.ready))
        password = await provision(api, "dev-split")
        device = await broker.device("dev-split", password).connect()
        await device.publish("paku/dev-split/telemetry", '{"ts": 1780000000000}')
        await settled(api, "dev-split", 1)
        await device.disconnect()
        health = (await api.get("/health")).json()
        assert health["components"] == {"database": "ok", "broker": "ok"}
        assert collector_only.stats.accepted["telemetry"] == 1


def _own_spool(settings: Settings) -> Settings:
    return settings.model_copy(update={"spool_dir": settings.data_dir / "spool-again"})
