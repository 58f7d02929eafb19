"""The collector link acknowledges a message only when told to, and only on the connection
that delivered it: an ack meant for an earlier connection must never settle a message on a
later one, where the same packet id can name a message not yet stored."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx

from paku_iot.broker.link import BrokerLink, LinkOptions
from paku_iot.protocol import uplink_subscriptions
from paku_iot.settings import BACKEND_MQTT_USERNAME
from tests.support import eventually
from tests.support.broker import Broker


class Deliveries:
    def __init__(self) -> None:
        self.tokens: list[int] = []

    def __call__(self, topic: str, payload: bytes, _retained: bool, ack: int | None) -> None:
        if topic.endswith("/telemetry") and json.loads(payload)["n"] == 1:
            assert ack is not None
            self.tokens.append(ack)


async def drop_connection(link: BrokerLink) -> None:
    """Cut the TCP connection without a DISCONNECT; the link reconnects on its own."""
    link._transport().abort()
    await eventually(lambda: asyncio.sleep(0, not link.ready), timeout=10)
    await eventually(lambda: asyncio.sleep(0, link.ready), timeout=15)


async def test_only_the_delivering_connection_acknowledges(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = (await api.post("/devices", json={"model": "m", "id": "ack-1"})).json()[
        "credentials"
    ]["password"]
    deliveries = Deliveries()
    link = BrokerLink(
        LinkOptions(
            host=broker.host,
            port=broker.backend_port,
            username=BACKEND_MQTT_USERNAME,
            password=broker.backend_password,
            client_id=f"ack-test-{secrets.token_hex(4)}",
            persistent_session=True,
            subscriptions=tuple(uplink_subscriptions()),
        )
    )
    link.start(deliveries)
    try:
        await eventually(lambda: asyncio.sleep(0, link.ready), timeout=10)
        device = await broker.device("ack-1", password).connect()
        assert await device.publish("paku/ack-1/telemetry", json.dumps({"n": 1})) == 0
        await device.disconnect()
        await eventually(lambda: asyncio.sleep(0, len(deliveries.tokens) == 1))

        # Not acknowledged: the broker delivers it again on the next connection.
        await drop_connection(link)
        await eventually(lambda: asyncio.sleep(0, len(deliveries.tokens) == 2))

        # An ack for the first connection is not sent on the second one...
        link.send_pubacks([deliveries.tokens[0]])
        await asyncio.sleep(0.3)
        await drop_connection(link)
        await eventually(lambda: asyncio.sleep(0, len(deliveries.tokens) == 3))

        # ...while the current connection's ack settles it for good.
        link.send_pubacks([deliveries.tokens[2]])
        await asyncio.sleep(0.3)
        await drop_connection(link)
        await asyncio.sleep(1.5)
        assert len(deliveries.tokens) == 3
    finally:
        await link.stop()
