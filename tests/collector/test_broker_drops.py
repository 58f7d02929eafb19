"""When the broker drops messages it already acknowledged (the collector's queue is full),
paku-iot says so: an ERROR log line, a Prometheus counter and `/health` degraded.

The drop itself is reproduced as a fleet meets it: the collector is away, devices publish more
than the broker queues for it (`max_queued_messages`), the broker PUBACKs every message and
keeps only as many as its limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paku_iot.collector.broker_drops import BrokerDropWatch
from paku_iot.collector.stats import IngestStats
from paku_iot.server.service import Role, running_service
from paku_iot.settings import Settings
from tests.support import eventually
from tests.support.api import admin_api
from tests.support.broker import Broker, broker_options, prepared_broker
from tests.support.downlink import provision

QUEUE_LIMIT = 1000
SENT = 1500


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Replaces conftest's `broker`: the project's config with a small session queue."""
    started = prepared_broker(
        tmp_path / "broker", replace(broker_options(), max_queued_messages=QUEUE_LIMIT)
    )
    started.start()
    yield started
    started.stop()


async def test_a_drop_by_the_broker_is_logged_counted_and_degrades_health(
    settings: Settings, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # The collector's session exists (it ran once), then it is away.
    async with running_service(settings) as first, admin_api(first) as api:
        password = await provision(api, "burst-1")

        async def subscribed() -> None:
            assert first.link.ready

        await eventually(subscribed)
    device = await broker.device("burst-1", password).connect()
    for n in range(SENT):
        sample = {"ts": 1_700_000_000_000 + n, "n": n}
        assert await device.publish("paku/burst-1/telemetry", json.dumps(sample)) == 0
    await device.disconnect()

    caplog.set_level(logging.ERROR, logger="paku_iot.collector")
    async with running_service(settings, frozenset(Role)) as again, admin_api(again) as api:

        async def reported() -> None:
            health = (await api.get("/health")).json()
            assert health["status"] == "degraded"
            assert health["components"]["collector"] == "degraded"
            assert "dropped" in health["details"]["collector"]

        await eventually(reported, timeout=20)
        metrics = (await api.get("/metrics")).text
        dropped = [line for line in metrics.splitlines() if line.startswith("paku_broker_dropped_")]
        assert dropped, metrics
        assert float(dropped[0].split()[-1]) >= SENT - QUEUE_LIMIT

        async def what_was_kept() -> None:
            page = await api.get("/devices/burst-1/telemetry", params={"limit": 1000})
            assert len(page.json()["items"]) == QUEUE_LIMIT

        # Today's loss, made visible: the broker kept its limit's worth, no more.
        await eventually(what_was_kept)
    assert any("the broker dropped" in r.getMessage() for r in caplog.records)


def test_the_counter_is_read_across_reconnects_and_broker_restarts() -> None:
    stats = IngestStats()
    clock = [datetime(2026, 12, 1, tzinfo=UTC)]
    watch = BrokerDropWatch(stats, now=lambda: clock[0])
    topic = "$SYS/broker/publish/messages/dropped"
    watch.connected()
    watch.observe(topic, b"0")
    assert stats.broker_dropped == 0
    assert watch.degraded_reason() is None
    watch.observe(topic, b"7")
    watch.observe(topic, b"7")  # published again unchanged: nothing new
    assert stats.broker_dropped == 7
    watch.connected()
    watch.observe(topic, b"3")  # the broker restarted: its counter began again
    assert stats.broker_dropped == 10
    watch.observe(topic, b"garbage")
    watch.observe("$SYS/broker/uptime", b"12")
    assert stats.broker_dropped == 10
    reason = watch.degraded_reason()
    assert reason is not None
    assert "10" in reason
    clock[0] += timedelta(hours=2)
    assert watch.degraded_reason() is None
