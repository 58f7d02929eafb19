"""Test helpers: real services, real clients. Nothing here mocks the broker or the database."""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

IN_CI = os.environ.get("CI", "").lower() == "true"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

T = TypeVar("T")


def require(condition: bool, why: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port_sync(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Retry `check` until it returns without an AssertionError (and truthy), or time out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result is None or result:
                return result
            raise AssertionError(f"check returned {result!r}")
        except AssertionError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(0.05)


def _close(client: paho.Client) -> None:
    client.loop_stop()
    # paho's loop keeps a loopback socket pair for wake-ups and closes it only when garbage
    # collected; close it now so no test leaks sockets (warnings are errors here).
    client._reset_sockets()


class ConnectRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class DeviceClient:
    """A real MQTT v5 device (paho), driven from threads so the service's loop keeps running."""

    host: str
    port: int
    username: str
    password: str
    client_id: str | None = None
    will: tuple[str, bytes] | None = None
    messages: queue.Queue[Received] = field(default_factory=queue.Queue)
    _acks: dict[int, int] = field(default_factory=dict)
    _ack_event: threading.Condition = field(default_factory=threading.Condition)
    _client: paho.Client | None = None

    def _connect_sync(self) -> None:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id or self.username,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self.username, self.password)
        if self.will:
            client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        connected = threading.Event()
        outcome: dict[str, Any] = {}

        def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            outcome["reason"] = reason
            connected.set()

        def on_publish(_c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
            with self._ack_event:
                self._acks[mid] = reason.value
                self._ack_event.notify_all()

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            self.messages.put(Received(msg.topic, msg.payload, bool(msg.retain)))

        client.on_connect = on_connect
        client.on_publish = on_publish
        client.on_message = on_message
        client.connect(self.host, self.port, keepalive=5)
        client.loop_start()
        if not connected.wait(10):
            _close(client)
            raise ConnectRefused("no CONNACK")
        reason = outcome["reason"]
        if reason.is_failure:
            _close(client)
            raise ConnectRefused(str(reason))
        self._client = client

    async def connect(self) -> DeviceClient:
        await asyncio.to_thread(self._connect_sync)
        return self

    def _publish_sync(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return 0
        with self._ack_event:
            ok = self._ack_event.wait_for(lambda: info.mid in self._acks, timeout=10)
        assert ok, f"no PUBACK for {topic}"
        return self._acks.pop(info.mid)

    async def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> int:
        """Publish and return the PUBACK reason code (0 = accepted, 0x87 = not authorised)."""
        data = payload.encode() if isinstance(payload, str) else payload
        return await asyncio.to_thread(self._publish_sync, topic, data, qos, retain)

    def _subscribe_sync(self, topic: str) -> int:
        assert self._client is not None
        done = threading.Event()
        codes: list[int] = []

        def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
            codes.extend(r.value for r in reasons)
            done.set()

        self._client.on_subscribe = on_subscribe
        self._client.subscribe(topic, qos=1)
        assert done.wait(10), "no SUBACK"
        return codes[0]

    async def subscribe(self, topic: str) -> int:
        """Subscribe and return the SUBACK reason code (1 = granted QoS 1, 0x87 = refused)."""
        return await asyncio.to_thread(self._subscribe_sync, topic)

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def _disconnect_sync(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            _close(self._client)

    async def disconnect(self) -> None:
        await asyncio.to_thread(self._disconnect_sync)

    def _drop_sync(self) -> None:
        assert self._client is not None
        sock = self._client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the network vanishes: no DISCONNECT is sent
        time.sleep(0.2)
        _close(self._client)

    async def drop_network(self) -> None:
        await asyncio.to_thread(self._drop_sync)
