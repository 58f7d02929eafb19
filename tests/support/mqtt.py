"""The MQTT device of the tests: a real paho MQTT v5 client, plain or over TLS, driven from
threads so that the service's event loop keeps running. Nothing here mocks the broker."""

from __future__ import annotations

import asyncio
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

# PUBACK success: 0x00, or 0x10 "no matching subscribers" when nobody listens.
ACCEPTED = {0x00, 0x10}
# DISCONNECT reason 0x04 "disconnect with will message": the broker publishes the will now.
DISCONNECT_WITH_WILL = 0x04


def close_paho(client: paho.Client) -> None:
    """Stop a paho client's network thread and close its sockets."""
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


def _close_sockets_of(exc: BaseException) -> None:
    """paho leaves the socket of a failed TLS handshake open in its frame; close it, since
    warnings (an unclosed socket's ResourceWarning among them) are errors here."""
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, ssl.SSLSocket):
                value.close()
        tb = tb.tb_next


@dataclass
class DeviceClient:
    """A real MQTT v5 device (paho), driven from threads so the service's loop keeps running.

    It never reconnects by itself, so a test sees every refusal and every lost connection.
    `username=None` connects without credentials. With `tls=True` it speaks MQTT over TLS and
    verifies the broker with `ca_file` (None: with the system's CAs only)."""

    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str | None = None
    will: tuple[str, bytes] | None = None
    tls: bool = False
    ca_file: Path | None = None
    messages: queue.Queue[Received] = field(default_factory=queue.Queue)
    _acks: dict[int, int] = field(default_factory=dict)
    _ack_event: threading.Condition = field(default_factory=threading.Condition)
    _client: paho.Client | None = None

    def __post_init__(self) -> None:
        assert self.tls or self.ca_file is None, "a CA file is for TLS only"

    def _connect_sync(self) -> None:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id or self.username or "anonymous",
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)
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
        try:
            client.connect(self.host, self.port, keepalive=5)
        except BaseException as exc:
            _close_sockets_of(exc)
            close_paho(client)
            raise
        client.loop_start()
        if not connected.wait(10):
            client.disconnect()
            close_paho(client)
            raise ConnectRefused("no CONNACK")
        reason = outcome["reason"]
        if reason.is_failure:
            close_paho(client)
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

    def _disconnect_sync(self, with_will: bool) -> None:
        if self._client is None:
            return
        if with_will:
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL)
            )
            time.sleep(0.2)
        else:
            self._client.disconnect()
        close_paho(self._client)

    async def disconnect(self, *, with_will: bool = False) -> None:
        """DISCONNECT; `with_will=True` sends reason 0x04, and the broker publishes the will."""
        await asyncio.to_thread(self._disconnect_sync, with_will)

    def _drop_sync(self) -> None:
        assert self._client is not None
        sock = self._client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the network vanishes: no DISCONNECT is sent
        time.sleep(0.2)
        close_paho(self._client)

    async def drop_network(self) -> None:
        await asyncio.to_thread(self._drop_sync)
