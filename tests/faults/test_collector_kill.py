"""The collector process is killed (SIGKILL: no shutdown code runs) in the middle of a stream
and started again: every message the broker acknowledged to a device is in the database
exactly once.

It holds because the collector acknowledges a message to the broker only once it is synced
to its spool, on a persistent session: what it had not acknowledged when it died is delivered
again to the next process with the same instance id, what it had is in the spool that process
drains first, and a row written twice is dropped by the (device_id, ts) key.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.support import eventually
from tests.support.faults import Fleet, MakeDeployment, check_exactly_once


async def kill_collector_mid_stream(
    make_deployment: MakeDeployment,
    database_url: str,
    *,
    devices: int,
    per_device: int,
    rate: float,
    kills: int = 1,
    down_s: float = 1.0,
) -> dict[str, float]:
    deployment = make_deployment(database_url)
    deployment.process("api").start()
    collector = deployment.process("collector").start()
    await deployment.wait_healthy()
    fleet = Fleet(
        deployment.broker.host, deployment.broker.port, await deployment.provision(devices)
    )
    try:
        await fleet.connect()
        await fleet.wait_for_subscriber()
        total = devices * per_device
        started = time.monotonic()
        # The devices publish at least `per_device` each, and on until the last restart.
        restarted = threading.Event()
        stream = asyncio.create_task(
            asyncio.to_thread(fleet.stream, per_device, rate, until=restarted)
        )
        for kill in range(1, kills + 1):
            # Mid-stream: a good part committed, more arriving.
            threshold = total * kill / (kills + 1)
            while await deployment.stored_count() < threshold:
                assert not stream.done(), "the stream ended before the collector was killed"
                await asyncio.sleep(0.05)
            collector.kill()
            await asyncio.sleep(down_s)  # devices keep publishing; the broker queues
            collector.start()
        restarted.set()
        await stream
        published_s = time.monotonic() - started
        await fleet.wait_answered(timeout=120)
        acked = fleet.acked()
        assert len(acked) == fleet.published, fleet.codes()  # the broker took every one

        async def all_stored() -> None:
            count = await deployment.stored_count()
            assert count >= len(acked), f"{count} of {len(acked)} stored"

        try:
            await eventually(all_stored, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployment.logs()}") from None
        stored_s = time.monotonic() - started
        check_exactly_once(acked, fleet.sent(), await deployment.stored_keys())
        assert await deployment.rejected() == []
        await deployment.wait_healthy(timeout=10)
        assert not (errors := collector.unexpected_errors()), "\n".join(errors)
        result = {"messages": len(acked), "published_s": published_s, "stored_s": stored_s}
        print(f"collector killed {kills}x: {result}")
        return result
    finally:
        fleet.close()


@pytest.mark.timeout(180)
async def test_a_collector_killed_mid_stream_loses_and_duplicates_nothing(
    make_deployment: MakeDeployment, database_url: str
) -> None:
    await kill_collector_mid_stream(
        make_deployment, database_url, devices=20, per_device=250, rate=2500
    )


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_50k_messages_from_100_devices_through_collector_kills(
    make_deployment: MakeDeployment, database_url: str
) -> None:
    await kill_collector_mid_stream(
        make_deployment, database_url, devices=100, per_device=500, rate=5000, kills=2
    )
