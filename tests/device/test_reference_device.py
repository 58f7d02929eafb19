"""The reference device against a real Mosquitto started with the project's config.

The device gets credentials the way the service would give them (a `$7$` line in the broker's
password file, then a reload); the "backend" is a paho client with the backend's credentials
that publishes commands and configuration and sees everything under `paku/#`.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from paku_iot.broker.passwords import hash_password, new_password
from paku_iot.broker.reload import reload_broker
from paku_iot.device import CommandError, DeviceConnectError, ReceivedCommand, ReferenceDevice
from paku_iot.device.messages import now_ms
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.mqtt import ConnectRefused, DeviceClient, Received

DEVICE = "dev-ref-01"
STATE = f"paku/{DEVICE}/state"
CMD = f"paku/{DEVICE}/cmd"
CONFIG = f"paku/{DEVICE}/config"
ACK = f"paku/{DEVICE}/event/ack"
TELEMETRY = f"paku/{DEVICE}/telemetry"

Credentials = Callable[[str], Awaitable[str]]
DeviceFactory = Callable[..., Awaitable[ReferenceDevice]]


class Inbox:
    """What a paho subscriber received, collected from its thread's queue."""

    def __init__(self, client: DeviceClient) -> None:
        self.client = client
        self.seen: list[Received] = []

    def raw(self, topic: str) -> list[Received]:
        while True:
            try:
                self.seen.append(self.client.messages.get_nowait())
            except queue.Empty:
                break
        return [m for m in self.seen if m.topic == topic]

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.raw(topic) if m.payload]

    async def wait(
        self,
        topic: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda _doc: True,
        count: int = 1,
    ) -> list[dict[str, Any]]:
        """The messages on `topic` matching `predicate`, once there are at least `count`."""

        async def check() -> list[dict[str, Any]]:
            matching = [doc for doc in self.on(topic) if predicate(doc)]
            assert len(matching) >= count, f"{topic}: {self.on(topic)}"
            return matching

        return await eventually(check)


async def cmd(backend: Inbox, **command: Any) -> None:
    assert await backend.client.publish(CMD, json.dumps(command)) == 0


async def fresh_retained_state(broker: Broker) -> Received:
    """The retained state as a new subscriber gets it."""
    client = await broker.backend().connect()
    try:
        await client.subscribe(STATE)
        received = await asyncio.to_thread(client.messages.get, timeout=10)
    finally:
        await client.disconnect()
    return received


async def no_tasks_left() -> None:
    """Nothing of the device still runs: no reconnect waiting, no handler, no gmqtt reader."""
    current = asyncio.current_task()

    async def check() -> None:
        left = [task for task in asyncio.all_tasks() if task is not current]
        assert left == [], left

    await eventually(check, timeout=2)


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Inbox]:
    client = await broker.backend().connect()
    assert await client.subscribe("paku/#") == 1
    yield Inbox(client)
    await client.disconnect()


@pytest.fixture
def credentials(broker: Broker) -> Credentials:
    """Give a device id a password, as provisioning would: append `<id>:<$7$ hash>` to the
    broker's password file, reload, and wait until the broker accepts it."""

    async def add(device_id: str) -> str:
        password = new_password()
        with broker.paths.password_file.open("a", encoding="ascii") as file:
            file.write(f"{device_id}:{hash_password(password)}\n")
        assert reload_broker(broker.paths.pid_file)

        async def accepted() -> None:
            probe = broker.device(device_id, password, client_id=f"{device_id}-probe")
            try:
                await probe.connect()
            except ConnectRefused as exc:
                raise AssertionError(f"broker does not accept {device_id} yet: {exc}") from exc
            await probe.disconnect()

        await eventually(accepted)
        return password

    return add


@pytest.fixture
async def devices(broker: Broker, credentials: Credentials) -> AsyncIterator[DeviceFactory]:
    """Make reference devices (with fresh credentials unless `password` is given); every one
    is disconnected at the end."""
    made: list[ReferenceDevice] = []

    async def make(
        device_id: str = DEVICE, password: str | None = None, **kwargs: Any
    ) -> ReferenceDevice:
        if password is None:
            password = await credentials(device_id)
        device = ReferenceDevice(broker.host, broker.port, device_id, password, **kwargs)
        made.append(device)
        return device

    yield make
    for device in made:
        await device.disconnect()


async def test_connect_publishes_the_full_online_state_retained(
    broker: Broker, backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices(fw_version="2.3.4", rssi=-71)
    assert not device.connected
    await device.connect()
    assert device.connected

    [state] = await backend.wait(STATE)
    assert state == {"online": True, "rssi": -71, "fwVersion": "2.3.4", "configVersion": 0}
    retained = await fresh_retained_state(broker)
    assert retained.retain
    assert json.loads(retained.payload) == state


async def test_telemetry_and_events_arrive_with_ts(backend: Inbox, devices: DeviceFactory) -> None:
    device = await devices()
    await device.connect()
    before = now_ms()
    first = await device.send_telemetry({"temp": 21.5})
    second = await device.send_telemetry({"temp": 21.6})
    after = now_ms()
    await device.send_telemetry({"temp": 19.0}, ts_ms=1_764_000_000_000)
    await device.send_event("button", {"press": "long"}, ts_ms=1_764_000_000_123)

    received = await backend.wait(TELEMETRY, count=3)
    assert received == [first, second, {"temp": 19.0, "ts": 1_764_000_000_000}]
    assert first["temp"] == 21.5
    # Each sample gets its own ts: the backend keeps one row per (device, ts).
    assert before <= first["ts"] < second["ts"] <= after + 1
    [event] = await backend.wait(f"paku/{DEVICE}/event/button")
    assert event == {"press": "long", "ts": 1_764_000_000_123}
    assert not any(m.retain for m in backend.raw(TELEMETRY))


async def test_a_command_runs_and_is_acknowledged_with_its_result(
    backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()
    seen: list[dict[str, Any]] = []

    async def ping(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return {"pong": True, "echo": params["n"]}

    device.on_command("ping", ping)
    await device.connect()
    await cmd(backend, id="c-1", name="ping", params={"n": 7}, expiresAt=None)

    [ack] = await backend.wait(ACK)
    assert ack == {"id": "c-1", "ok": True, "result": {"pong": True, "echo": 7}, "ts": ack["ts"]}
    assert abs(ack["ts"] - now_ms()) < 10_000
    assert seen == [{"n": 7}]
    assert device.commands_executed == [ReceivedCommand("c-1", "ping")]


async def test_a_failing_handler_is_acknowledged_with_its_error(
    backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()

    async def refuse(_params: dict[str, Any]) -> None:
        raise CommandError("disk full")

    async def crash(_params: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    device.on_command("refuse", refuse)
    device.on_command("crash", crash)
    await device.connect()
    await cmd(backend, id="c-2", name="refuse", params={}, expiresAt=None)
    await cmd(backend, id="c-3", name="crash", params={}, expiresAt=None)

    acks = {ack["id"]: ack for ack in await backend.wait(ACK, count=2)}
    assert acks["c-2"] == {"id": "c-2", "ok": False, "error": "disk full", "ts": acks["c-2"]["ts"]}
    assert acks["c-3"] == {"id": "c-3", "ok": False, "error": "boom", "ts": acks["c-3"]["ts"]}
    assert [c.id for c in device.commands_executed] == ["c-2", "c-3"]


async def test_an_unknown_command_is_refused(backend: Inbox, devices: DeviceFactory) -> None:
    device = await devices()
    await device.connect()
    await cmd(backend, id="c-4", name="selfdestruct", params={}, expiresAt=None)

    [ack] = await backend.wait(ACK)
    assert ack == {
        "id": "c-4",
        "ok": False,
        "error": "unknown command: selfdestruct",
        "ts": ack["ts"],
    }
    assert device.commands_received == [ReceivedCommand("c-4", "selfdestruct")]
    assert device.commands_executed == []


async def test_an_expired_command_is_not_run(backend: Inbox, devices: DeviceFactory) -> None:
    device = await devices()
    runs: list[str] = []

    async def reboot(params: dict[str, Any]) -> dict[str, bool]:
        runs.append(params["why"])
        return {"rebooting": True}

    device.on_command("reboot", reboot)
    await device.connect()
    await cmd(
        backend, id="c-old", name="reboot", params={"why": "old"}, expiresAt="2020-01-01T00:00:00Z"
    )
    await cmd(
        backend,
        id="c-new",
        name="reboot",
        params={"why": "new"},
        expiresAt="2199-01-01T00:00:00+01:00",
    )
    # Epoch milliseconds win over the RFC 3339 form: what firmware without a date parser reads.
    await cmd(
        backend,
        id="c-old-ms",
        name="reboot",
        params={"why": "old-ms"},
        expiresAt="2199-01-01T00:00:00Z",
        expiresAtMs=1_577_836_800_000,  # 2020-01-01
    )

    acks = {ack["id"]: ack for ack in await backend.wait(ACK, count=3)}
    assert acks["c-old"] == {
        "id": "c-old",
        "ok": False,
        "error": "expired",
        "ts": acks["c-old"]["ts"],
    }
    assert acks["c-old-ms"]["error"] == "expired"
    assert acks["c-new"]["ok"] is True
    assert runs == ["new"]


async def test_a_redelivered_command_is_answered_again_but_not_run_twice(
    backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()
    runs = 0

    async def slow(_params: dict[str, Any]) -> dict[str, int]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)  # the second delivery arrives while the first still runs
        return {"runs": runs}

    device.on_command("slow", slow)
    await device.connect()
    await cmd(backend, id="c-dup", name="slow", params={}, expiresAt=None)
    await cmd(backend, id="c-dup", name="slow", params={}, expiresAt=None)
    await device.wait_for(lambda: len(device.commands_received) == 2)
    await cmd(backend, id="c-dup", name="slow", params={}, expiresAt=None)  # after the answer

    await backend.wait(ACK, count=3)
    payloads = {m.payload for m in backend.raw(ACK)}
    # Byte for byte the same ack (ts included), so the backend stores it once.
    assert len(payloads) == 1
    assert json.loads(payloads.pop())["result"] == {"runs": 1}
    assert runs == 1
    assert device.commands_received == [ReceivedCommand("c-dup", "slow")] * 3
    assert device.commands_executed == [ReceivedCommand("c-dup", "slow")]


async def test_malformed_commands_are_ignored_or_refused(
    backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()

    async def ping(_params: dict[str, Any]) -> dict[str, bool]:
        return {"pong": True}

    device.on_command("ping", ping)
    await device.connect()
    for junk in [b"not json", b"[1, 2]", b'{"name": "ping"}', b'{"id": 5, "name": "ping"}']:
        assert await backend.client.publish(CMD, junk) == 0
    # With an id, the backend can be told what is wrong.
    await cmd(backend, id="c-bad", name="ping", params=[1], expiresAt=None)
    await cmd(backend, id="c-zone", name="ping", params={}, expiresAt="2199-01-01T00:00:00")
    await cmd(backend, id="c-ms", name="ping", params={}, expiresAtMs="7258118400000")
    await cmd(backend, id="c-name", name="ping/all", params={}, expiresAt=None)
    await cmd(backend, id="c-ok", name="ping")  # params and expiresAt may be left out

    acks = {ack["id"]: ack for ack in await backend.wait(ACK, count=5)}
    assert set(acks) == {"c-bad", "c-zone", "c-ms", "c-name", "c-ok"}
    assert "expiresAtMs '7258118400000' is not epoch milliseconds" in acks["c-ms"]["error"]
    assert acks["c-name"]["error"].startswith("invalid command: name 'ping/all'")
    assert acks["c-bad"]["error"] == "invalid command: params is not an object"
    assert acks["c-zone"]["ok"] is False
    assert "time zone" in acks["c-zone"]["error"]
    assert acks["c-ok"]["result"] == {"pong": True}
    assert device.commands_executed == [ReceivedCommand("c-ok", "ping")]


async def test_retained_config_is_applied_on_connect(
    backend: Inbox, devices: DeviceFactory
) -> None:
    applied: list[tuple[dict[str, Any], int]] = []

    async def on_config(config: dict[str, Any], version: int) -> None:
        applied.append((config, version))

    device = await devices(on_config=on_config)
    document = {"version": 3, "config": {"interval": 10}}
    assert await backend.client.publish(CONFIG, json.dumps(document), retain=True) == 0
    await device.connect()

    await device.wait_for_config(3)
    assert device.config == {"interval": 10}
    assert applied == [({"interval": 10}, 3)]
    states = await backend.wait(STATE, lambda s: s.get("configVersion") == 3)
    assert states[-1] == {"online": True, "rssi": -60, "fwVersion": "1.0.0", "configVersion": 3}
    assert backend.on(STATE)[-1]["configVersion"] == 3  # the last retained state says so


async def test_config_changes_while_connected(
    broker: Broker, backend: Inbox, devices: DeviceFactory
) -> None:
    applied: list[int] = []

    async def on_config(config: dict[str, Any], version: int) -> None:
        if config.get("broken"):
            raise ValueError("cannot apply")
        applied.append(version)

    device = await devices(on_config=on_config)
    await device.connect()
    await backend.wait(STATE)
    assert device.config_version == 0

    async def publish(payload: bytes | str) -> None:
        assert await backend.client.publish(CONFIG, payload, retain=True) == 0

    await publish(json.dumps({"version": 1, "config": {"interval": 5}}))
    await device.wait_for_config(1)
    await publish(json.dumps({"version": 2, "config": {"interval": 60}}))
    await publish(json.dumps({"version": 2, "config": {"interval": 60}}))  # same version: no-op
    await publish(b"")  # retained config cleared: keep what we have
    await publish(json.dumps({"version": 3, "config": {"broken": True}}))  # refused
    await publish(b'{"version": "4", "config": {}}')  # invalid: ignored
    await publish(b'{"version": -4, "config": {}}')  # configVersion must be >= 0: ignored
    await publish(json.dumps({"version": 5, "config": {"interval": 30}}))
    await device.wait_for_config(5)

    assert applied == [1, 2, 5]
    assert device.config == {"interval": 30}
    await backend.wait(STATE, lambda s: s.get("configVersion") == 5)
    assert [s["configVersion"] for s in backend.on(STATE)] == [0, 1, 2, 5]
    assert json.loads((await fresh_retained_state(broker)).payload)["configVersion"] == 5


async def test_drop_makes_the_broker_publish_the_last_will(
    broker: Broker, backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()
    await device.connect()
    await backend.wait(STATE, lambda s: s["online"] is True)

    await device.drop()
    assert not device.connected
    await no_tasks_left()
    # The Will, not something the device sent: exactly {"online": false}.
    await backend.wait(STATE, lambda s: s == {"online": False})
    retained = await fresh_retained_state(broker)
    assert json.loads(retained.payload) == {"online": False}


async def test_graceful_disconnect_publishes_the_full_offline_state(
    broker: Broker, backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()
    await device.connect()
    await backend.wait(STATE)

    await device.disconnect()
    assert not device.connected
    await no_tasks_left()
    offline = {"online": False, "rssi": -60, "fwVersion": "1.0.0", "configVersion": 0}
    await backend.wait(STATE, lambda s: s == offline)
    # No Will after a DISCONNECT: the retained state is still the device's own.
    assert json.loads((await fresh_retained_state(broker)).payload) == offline
    await device.disconnect()  # twice is harmless


async def test_commands_sent_while_offline_arrive_on_reconnect(
    backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()

    async def ping(_params: dict[str, Any]) -> dict[str, bool]:
        return {"pong": True}

    device.on_command("ping", ping)
    await device.connect()
    await device.drop()
    await backend.wait(STATE, lambda s: s == {"online": False})

    await cmd(backend, id="c-queued", name="ping", params={}, expiresAt=None)
    assert backend.on(ACK) == []
    await device.connect()  # the same persistent session: the broker kept the command

    [ack] = await backend.wait(ACK)
    assert ack["id"] == "c-queued"
    assert ack["ok"] is True
    await backend.wait(STATE, lambda s: s["online"] is True)


async def test_wrong_password_is_refused(broker: Broker, credentials: Credentials) -> None:
    await credentials(DEVICE)
    device = ReferenceDevice(broker.host, broker.port, DEVICE, "not-the-password")
    with pytest.raises(DeviceConnectError) as refused:
        await device.connect()
    assert refused.value.reason_code in {0x86, 0x87}
    assert not device.connected
    await device.disconnect()


async def test_the_device_reconnects_until_it_is_told_to_disconnect(
    broker: Broker, devices: DeviceFactory
) -> None:
    device = await devices(reconnect_delay_s=0.1, max_reconnect_delay_s=0.4)
    await device.connect()

    await asyncio.to_thread(broker.stop)
    await device.wait_for(lambda: not device.connected)
    await asyncio.to_thread(broker.start)
    await device.wait_for(lambda: device.connected)  # steps 1-3 again, by itself
    await device.send_telemetry({"after": "restart"})
    assert json.loads((await fresh_retained_state(broker)).payload)["online"] is True

    # disconnect() while a reconnect is pending: nothing may connect behind our back.
    await asyncio.to_thread(broker.stop)
    await device.wait_for(lambda: not device.connected)
    await device.disconnect()
    await no_tasks_left()
    await asyncio.to_thread(broker.start)
    await asyncio.sleep(1.0)  # more than the reconnect delays: a leftover retry would be back
    assert not device._link_up()
    # The broker published the Will of the connection it lost; a leftover reconnect would
    # have replaced it with the online state.
    assert json.loads((await fresh_retained_state(broker)).payload) == {"online": False}


async def test_the_device_refuses_to_send_what_the_backend_would_reject(
    broker: Broker, backend: Inbox, devices: DeviceFactory
) -> None:
    device = await devices()
    await device.connect()
    with pytest.raises(ValueError, match="outside 2000-2199"):
        await device.send_telemetry({"temp": 1.0}, ts_ms=1_764_000_000)  # seconds, not ms
    with pytest.raises(ValueError, match="not valid JSON"):
        await device.send_telemetry({"temp": float("nan")})
    with pytest.raises(ValueError, match="NUL"):
        await device.send_telemetry({"note": "a\x00b"})
    with pytest.raises(ValueError, match="surrogate"):
        await device.send_telemetry({"note": "\ud800"})
    with pytest.raises(ValueError, match="invalid event name"):
        await device.send_event("button/long", {})
    with pytest.raises(ValueError, match="invalid command name"):
        device.on_command("reboot now", device.wait_for)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rssi"):
        await device.update_state(rssi=-300)
    with pytest.raises(ValueError, match="invalid device id"):
        ReferenceDevice(broker.host, broker.port, "a/b", "password")

    await device.send_telemetry({"temp": 2.0})  # the connection is still fine
    [sent] = await backend.wait(TELEMETRY)
    assert sent["temp"] == 2.0
    assert len(backend.on(TELEMETRY)) == 1
    assert device.rssi == -60
