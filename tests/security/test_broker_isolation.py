"""What a device holding valid credentials can do to other clients on the broker: nothing.

It cannot take over another client's session by connecting with its client id (the
collector's or another device's; no backend client id is a device id, so none can even be
provisioned), it cannot join the collector's shared subscription and swallow a share of
everyone's uplink, and the backend's own account is refused where devices connect (a leaked
backup's broker password opens nothing devices can reach)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from paku_iot.broker.link import shared_group_name
from paku_iot.protocol import is_valid_device_id, uplink_subscriptions
from paku_iot.server.service import Service, _broker_link, running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from tests.support import eventually
from tests.support.api import admin_api
from tests.support.broker import Broker
from tests.support.downlink import go_online, provision
from tests.support.mqtt import ConnectRefused, DeviceClient


def _takeovers(broker: Broker) -> list[str]:
    """The broker's own record of a session taken over by a second connect with its id."""
    log = broker.paths.log_file.read_text(errors="replace")
    return [line for line in log.splitlines() if "already connected" in line]


async def _telemetry_count(api: httpx.AsyncClient, device_id: str) -> int:
    page = await api.get(f"/devices/{device_id}/telemetry", params={"limit": 1000})
    assert page.status_code == 200, page.text
    return len(page.json()["items"])


async def _send_telemetry(device: DeviceClient, device_id: str, count: int) -> None:
    for n in range(count):
        sample = {"ts": 1_700_000_000_000 + n, "n": n}
        await device.publish(f"paku/{device_id}/telemetry", json.dumps(sample), qos=1)


async def test_a_device_using_the_collectors_client_id_disconnects_nobody_and_gets_nothing(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    intruder_password = await provision(api, "intruder-1")
    sender_password = await provision(api, "sender-1")
    intruder = await broker.device(
        "intruder-1", intruder_password, client_id=service.link.client_id
    ).connect()
    try:
        await intruder.subscribe("paku/#")
        sender = await broker.device("sender-1", sender_password).connect()
        await _send_telemetry(sender, "sender-1", 20)
        await sender.disconnect()

        async def all_stored() -> None:
            assert await _telemetry_count(api, "sender-1") == 20

        await eventually(all_stored)
        await asyncio.sleep(0.5)
        assert intruder.messages.empty(), "the intruder received what was meant for the collector"
        assert service.link.connected
        assert _takeovers(broker) == []
    finally:
        await intruder.disconnect()


async def test_a_device_using_another_devices_client_id_disconnects_nobody_and_gets_nothing(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    victim_password = await provision(api, "victim-1")
    intruder_password = await provision(api, "intruder-2")
    victim = await go_online(api, broker, "victim-1", victim_password)
    intruder = await broker.device("intruder-2", intruder_password, client_id="victim-1").connect()
    try:
        await intruder.subscribe("paku/victim-1/cmd")
        await asyncio.sleep(0.5)
        assert victim.is_connected, "the intruder's connect closed the victim's session"
        assert _takeovers(broker) == []
        sent = await api.post("/devices/victim-1/commands", json={"name": "ping"})
        assert sent.status_code in (200, 201, 202), sent.text
        command = await asyncio.to_thread(victim.messages.get, True, 5)
        assert command.topic == "paku/victim-1/cmd"
        assert intruder.messages.empty()
    finally:
        await intruder.disconnect()
        await victim.disconnect()


def backend_client_ids(settings: Settings) -> list[str]:
    """The client id of every broker link the service makes: a collector's and an API-only
    process's. (Not the collector's former id, `paku-collector-<instance>`, a device's id
    too: server/legacy_session.py takes that session over once, on the backend listener.)"""
    return [
        _broker_link(settings, "backend-password", collecting=collecting).client_id
        for collecting in (True, False)
    ]


@pytest.mark.parametrize("session_name", ["r1", "kitchen-01", "test-0a1b2c3d"])
def test_no_backend_client_id_is_a_device_id(session_name: str) -> None:
    """Even with an instance id that is a device id itself, the backend's client ids are not:
    no device can be given one, so none can connect with it where devices connect."""
    ids = backend_client_ids(Settings(instance_id=session_name))
    assert len(set(ids)) == 2, ids
    for client_id in ids:
        assert not is_valid_device_id(client_id), client_id


async def test_no_device_can_be_provisioned_with_a_backend_client_id(
    api: httpx.AsyncClient, service: Service
) -> None:
    ids = {service.link.client_id, *backend_client_ids(service.settings)}
    for client_id in ids:
        response = await api.post("/devices", json={"model": "m", "id": client_id})
        assert response.status_code == 422, (client_id, response.text)
        assert response.json()["error"]["code"] == "invalid_input"


@pytest.fixture
async def shared_service(settings: Settings) -> AsyncIterator[Service]:
    """A collector that subscribes through a shared subscription, as replicas do."""
    shared = settings.model_copy(update={"collector_shared_subscription": True})
    async with running_service(shared) as running:

        async def subscribed() -> None:
            assert running.link.ready

        await eventually(subscribed)
        yield running


@pytest.fixture
async def shared_api(shared_service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_api(shared_service) as client:
        yield client


async def test_a_device_cannot_join_the_collectors_shared_subscription(
    shared_api: httpx.AsyncClient, shared_service: Service, broker: Broker
) -> None:
    thief_password = await provision(shared_api, "thief-1")
    sender_password = await provision(shared_api, "sender-2")
    thief = await broker.device("thief-1", thief_password).connect()
    try:
        # The group name paku-iot used to use (public, in its source), and the collector's
        # client id: all a device can know. The group in use now is derived from the backend's
        # broker password, which no device holds.
        assert shared_service.link.shared_group not in ("paku-collector", None)
        for group in ("paku-collector", shared_service.link.client_id.replace(".", "-")):
            for uplink in uplink_subscriptions():
                await thief.subscribe(f"$share/{group}/{uplink.topic_filter}")
        sender = await broker.device("sender-2", sender_password).connect()
        await _send_telemetry(sender, "sender-2", 40)
        await sender.disconnect()

        async def all_stored() -> None:
            assert await _telemetry_count(shared_api, "sender-2") == 40

        await eventually(all_stored)
        assert thief.messages.empty()
    finally:
        await thief.disconnect()


def test_the_shared_group_is_secret_to_whoever_holds_the_backend_password() -> None:
    first, second = shared_group_name("one password"), shared_group_name("another password")
    assert first != second
    assert first == shared_group_name("one password")  # every replica derives the same
    assert len(first) >= 32
    for forbidden in "/+#":
        assert forbidden not in first


async def test_the_backends_password_is_refused_where_devices_connect(broker: Broker) -> None:
    with pytest.raises(ConnectRefused):
        await broker.device(BACKEND_MQTT_USERNAME, broker.backend_password).connect()
    # On its own listener it works: that listener is the only place it opens anything.
    backend = await broker.backend().connect()
    await backend.disconnect()


async def test_a_device_is_refused_on_the_backends_listener(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    password = await provision(api, "wanderer-1")
    on_device_listener = await broker.device("wanderer-1", password).connect()
    await on_device_listener.disconnect()
    with pytest.raises(ConnectRefused):
        await DeviceClient(broker.host, broker.backend_port, "wanderer-1", password).connect()


def test_the_backend_password_is_not_in_the_device_password_file(broker: Broker) -> None:
    devices = Path(broker.paths.password_file).read_text()
    assert BACKEND_MQTT_USERNAME not in devices
