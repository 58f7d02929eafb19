"""An upgrade from the release whose collector connected as `paku-collector-<instance>`:
whatever the broker queued under that id is stored, and the old session ends."""

from __future__ import annotations

import asyncio
import json

from paku_iot.broker.link import BrokerLink, LinkOptions
from paku_iot.protocol import uplink_subscriptions
from paku_iot.server.legacy_session import legacy_client_id
from paku_iot.server.service import Role, running_service
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from tests.support import eventually
from tests.support.api import admin_api
from tests.support.broker import Broker
from tests.support.downlink import provision


def _old_collector(broker: Broker, settings: Settings) -> BrokerLink:
    """The collector as it connected before: its former id, a persistent session subscribed
    to every device's uplink."""
    return BrokerLink(
        LinkOptions(
            host=broker.host,
            port=broker.backend_port,
            username=BACKEND_MQTT_USERNAME,
            password=broker.backend_password,
            client_id=legacy_client_id(settings.broker_session_name),
            persistent_session=True,
            subscriptions=tuple(uplink_subscriptions()),
        )
    )


async def _wait_ready(link: BrokerLink) -> None:
    async def ready() -> None:
        assert link.ready

    await eventually(ready)


async def test_what_the_former_session_queued_is_stored_and_the_session_ends(
    settings: Settings, broker: Broker
) -> None:
    # The old release ran: its collector had a session under the former id, which stays
    # (queueing for it) after it stopped, while the device keeps publishing. The API alone
    # provisions the device, so that no session exists under the new id yet.
    async with (
        running_service(settings, frozenset({Role.API})) as before,
        admin_api(before) as api,
    ):
        password = await provision(api, "upgrade-1")
    old = _old_collector(broker, settings)
    old.start(lambda *_: None)
    await _wait_ready(old)
    await old.stop()
    device = await broker.device("upgrade-1", password).connect()
    for n in range(25):
        sample = {"ts": 1_700_000_000_000 + n, "n": n}
        assert await device.publish("paku/upgrade-1/telemetry", json.dumps(sample)) == 0
    await device.disconnect()

    async with running_service(settings) as after, admin_api(after) as api:

        async def all_stored() -> None:
            page = await api.get("/devices/upgrade-1/telemetry", params={"limit": 100})
            assert len(page.json()["items"]) == 25

        await eventually(all_stored, timeout=20)
        await asyncio.sleep(2)  # the take-over ends the session once idle for a second

    # Nothing is left under the former id: a connect finds no session.
    probe = _old_collector(broker, settings)
    probe.start(lambda *_: None)
    try:

        async def connected() -> None:
            assert probe.connected

        await eventually(connected)
        assert not probe.session_present
    finally:
        await probe.stop(end_session=True)
