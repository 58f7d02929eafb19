"""The collector is SIGKILLed with a spool full of messages it acknowledged to the broker while
the database was unavailable (issue 17). The broker will not deliver those again: only the
spool has them. Started again (same PAKU_INSTANCE_ID, so the same spool directory), it stores
every one of them exactly once, messages without a device `ts` included (their spooled
receive time is their key)."""

from __future__ import annotations

import asyncio
import json

import pytest

from paku_iot.settings import SPOOL_MIN_BYTES
from tests.support import eventually
from tests.support.faults import Deployment, Fleet, MakeDeployment, check_exactly_once
from tests.support.mqtt import DeviceClient
from tests.support.postgres import pg_admin

TS_LESS = 10


async def spool_metric(deployment: Deployment, name: str) -> float:
    async with deployment.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


async def block_database(database_url: str, allow: bool) -> None:
    name = database_url.rsplit("/", 1)[1]
    await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if allow else 'false'}")
    if not allow:
        await pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )


async def ts_less_count(deployment: Deployment, device_id: str) -> int:
    async with deployment.client() as client:
        response = await client.get(f"/devices/{device_id}/telemetry", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return len(response.json()["items"])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("spool_bytes", [None, SPOOL_MIN_BYTES], ids=["spool", "small-spool"])
async def test_a_collector_killed_with_a_pending_spool_loses_and_duplicates_nothing(
    make_deployment: MakeDeployment, database_url: str, spool_bytes: int | None
) -> None:
    deployment = make_deployment(database_url)
    if spool_bytes is not None:
        # Several segments, rotated and partly consumed when the process dies.
        deployment.extra_env["PAKU_SPOOL_MAX_BYTES"] = str(spool_bytes)
    serve = deployment.process("all").start()
    await deployment.wait_healthy()
    creds = await deployment.provision(6)
    fleet = Fleet(deployment.broker.host, deployment.broker.port, creds[:5])
    quiet_id, quiet_password = creds[5]
    try:
        await fleet.connect()
        await fleet.wait_for_subscriber()
        await asyncio.to_thread(fleet.stream, 100, 1000)  # stored before the outage
        await block_database(database_url, allow=False)
        try:
            await asyncio.to_thread(fleet.stream, 200, 1000)
            await fleet.wait_answered()
            device = await DeviceClient(
                deployment.broker.host, deployment.broker.port, quiet_id, quiet_password
            ).connect()
            for n in range(TS_LESS):
                assert await device.publish(f"paku/{quiet_id}/telemetry", json.dumps({"n": n})) == 0
                await asyncio.sleep(0.005)  # the receive time is kept to the millisecond
            await device.disconnect()

            # The collector took and acknowledged what the outage held back.
            async def spooled() -> None:
                assert await spool_metric(deployment, "paku_spool_pending_messages") >= (
                    5 * 200 + TS_LESS
                )

            await eventually(spooled, timeout=30)
            serve.kill()
        finally:
            await block_database(database_url, allow=True)
        serve = deployment.process("all").start()
        await deployment.wait_healthy()
        acked = fleet.acked()
        assert len(acked) == fleet.published, fleet.codes()

        async def all_stored() -> None:
            assert await deployment.stored_count() >= len(acked) + TS_LESS
            assert await spool_metric(deployment, "paku_spool_pending_messages") == 0

        try:
            await eventually(all_stored, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deployment.logs()}") from None
        stored = [key for key in await deployment.stored_keys() if key[0] != quiet_id]
        check_exactly_once(acked, fleet.sent(), stored)
        assert await ts_less_count(deployment, quiet_id) == TS_LESS
        assert await deployment.rejected() == []
        assert "from an earlier run" in serve.log()
    finally:
        fleet.close()
