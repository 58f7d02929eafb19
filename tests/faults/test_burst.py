"""A burst far faster than the collector reads (issue 17): 100 devices publish QoS 1
telemetry as fast as the broker acknowledges it, with the lean load generator of `make bench`
(one connection per device, 32 messages in flight each).

Mosquitto takes such a burst at up to ~100k msgs/s, several times what a collector parses
and spools, so for the burst's length the difference waits in the broker's queue for the
collector. Before, that queue was capped at 100,000 messages and the collector acknowledged
only at database commit: 300,000 published, 195,338 stored, the rest dropped by the broker
after it had acknowledged them. Now the collector acknowledges once a message is in its spool
and takes messages off the broker as fast as it can while the database catches up behind, and
the broker's queue is sized for a burst (`PAKU_BROKER_MAX_QUEUED_MESSAGES`, 500,000 by
default: about 200 MiB of broker memory at most, docs/performance.md).

Checked: every message the broker acknowledged is stored exactly once, the broker dropped
nothing (its log and `paku_broker_dropped_messages_total`), and nothing was rejected.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from paku_iot.storage import schema
from paku_iot.storage.engine import create_engine
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.faults import Deployment, MakeDeployment

ROOT = Path(__file__).resolve().parents[2]


def run_loadgen(broker: Broker, credentials: Path, messages: int) -> dict[str, Any]:
    """The load generator of `make bench`, flat out, until `messages` are acknowledged."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.loadgen"),
            *("--host", broker.host, "--port", str(broker.port)),
            *("--credentials", str(credentials), "--messages", str(messages)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def stored(deployment: Deployment) -> tuple[int, int]:
    """Telemetry rows, and distinct (device, n) among them: equal when nothing is twice."""
    engine = create_engine(deployment.database_url)
    try:
        async with engine.connect() as conn:
            n = schema.telemetry.c.payload["n"].as_integer()
            distinct = select(schema.telemetry.c.device_id, n).distinct().subquery()
            rows = (
                await conn.execute(select(func.count()).select_from(schema.telemetry))
            ).scalar_one()
            unique = (await conn.execute(select(func.count()).select_from(distinct))).scalar_one()
            return int(rows), int(unique)
    finally:
        await engine.dispose()


async def dropped_by_broker(deployment: Deployment) -> float:
    async with deployment.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("paku_broker_dropped_messages_total "):
            return float(line.split()[1])
    raise AssertionError("no paku_broker_dropped_messages_total in /metrics")


async def burst(deployment: Deployment, devices: int, messages: int) -> dict[str, Any]:
    serve = deployment.process("all").start()
    await deployment.wait_healthy()
    credentials = deployment.root / "burst-devices.json"
    credentials.write_text(json.dumps(await deployment.provision(devices, prefix="burst")))
    await asyncio.sleep(1)  # the broker reloads its password file
    started = time.monotonic()
    load = await asyncio.to_thread(run_loadgen, deployment.broker, credentials, messages)
    assert load["connect_failures"] == 0, load
    assert load["sent"] == messages, load
    assert load["acked"] == messages, load
    assert load["refused"] == 0, load
    assert load["unmatched"] == 0, load

    async def all_stored() -> None:
        rows, _unique = await stored(deployment)
        assert rows >= messages, f"{rows} of {messages} stored"

    try:
        await eventually(all_stored, timeout=max(60, messages / 1000))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{deployment.logs()}") from None
    stored_after = time.monotonic() - started
    rows, unique = await stored(deployment)
    assert (rows, unique) == (messages, messages)
    broker_log = deployment.broker.paths.log_file.read_text(errors="replace")
    assert "messages are being dropped" not in broker_log.lower()
    assert await dropped_by_broker(deployment) == 0
    assert await deployment.rejected() == []
    assert not (errors := serve.unexpected_errors()), "\n".join(errors)
    result = {
        **load,
        "published_msgs_per_s": round(messages / load["elapsed_s"]),
        "all_stored_after_s": round(stored_after, 1),
    }
    print(f"burst: {result}")
    return result


@pytest.mark.timeout(300)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_burst_past_the_broker_queue_is_stored_exactly_once(
    make_deployment: MakeDeployment, database_url: str
) -> None:
    await burst(make_deployment(database_url), devices=100, messages=150_000)


@pytest.mark.soak
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_soak_a_300k_burst_from_100_devices_is_stored_exactly_once(
    make_deployment: MakeDeployment, database_url: str
) -> None:
    await burst(make_deployment(database_url), devices=100, messages=300_000)
